"""All scheduler SQL, and who may read what.

Every role reads here (`READERS`), each narrowed in SQL by `visible_loans` and
`visible_tasks`, so a row the reader may not see is absent (a 404, or missing from a
list), never fetched and then refused:

| route                                     | agent                       | everyone else |
|-------------------------------------------|-----------------------------|---------------|
| `GET /v1/loans/{id}`                      | loans it has had a task on  | any loan      |
| `GET /v1/tasks`, `/v1/loans/{id}/tasks`   | its own tasks (an `agent_id`| any task, by  |
|                                           | it names is not a filter)   | the filters   |
| `GET /v1/tasks/{id}`                      | its own task                | any task      |
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date
from typing import TypeVar

from sqlalchemy import ColumnElement, exists, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.scheduler.models import Agent, Loan, VisitTask
from services.scheduler.policy import AgentLoad
from services.scheduler.schemas import TaskQuery
from shared.auth import Principal, Role
from shared.pagination import Page, keyset_page

T = TypeVar("T")

# Every role reads the scheduler, each narrowed by the rules below.
READERS: tuple[Role, ...] = ("agent", "supervisor", "ops", "integration", "admin")
TASK_ORDER = (col(VisitTask.created_at), col(VisitTask.task_id))


def visible_tasks(who: Principal) -> ColumnElement[bool]:
    """The tasks `who` may read: an agent its own, every other reader all."""
    return col(VisitTask.agent_id) == who.sub if who.is_agent else true()


def visible_loans(who: Principal) -> ColumnElement[bool]:
    """The loans `who` may read: an agent those it has been given a task on (open or not),
    every other reader all. One statement either way, so an agent cannot tell by the time
    of the answer whether a loan it may not see exists."""
    if not who.is_agent:
        return true()
    return exists().where(
        col(VisitTask.loan_id) == col(Loan.loan_id), col(VisitTask.agent_id) == who.sub
    )


async def get_loan(session: AsyncSession, loan_id: str, *, for_update: bool = False) -> Loan | None:
    stmt = select(Loan).where(col(Loan.loan_id) == loan_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_loan_visible_to(session: AsyncSession, loan_id: str, who: Principal) -> Loan | None:
    """The loan, if `who` may read it (`visible_loans`); None as if it did not exist."""
    stmt = select(Loan).where(col(Loan.loan_id) == loan_id, visible_loans(who))
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_agent(session: AsyncSession, agent_id: str) -> Agent | None:
    return await session.get(Agent, agent_id)


async def get_task(
    session: AsyncSession, task_id: uuid.UUID, *, for_update: bool = False
) -> VisitTask | None:
    stmt = select(VisitTask).where(col(VisitTask.task_id) == task_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_task_visible_to(
    session: AsyncSession, task_id: uuid.UUID, who: Principal
) -> VisitTask | None:
    """The task, if `who` may read it (`visible_tasks`); None as if it did not exist."""
    stmt = select(VisitTask).where(col(VisitTask.task_id) == task_id, visible_tasks(who))
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_task_and_region(
    session: AsyncSession, task_id: uuid.UUID, *, for_update: bool = False
) -> tuple[VisitTask, str] | None:
    """The task and its loan's region, in one statement (the task row locked if asked)."""
    stmt = (
        select(VisitTask, col(Loan.region))
        .join(Loan, col(Loan.loan_id) == col(VisitTask.loan_id))
        .where(col(VisitTask.task_id) == task_id)
    )
    if for_update:
        stmt = stmt.with_for_update(of=VisitTask)
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else (row[0], row[1])


async def open_task(session: AsyncSession, loan_id: str, method: str) -> VisitTask | None:
    stmt = (
        select(VisitTask)
        .where(
            col(VisitTask.loan_id) == loan_id,
            col(VisitTask.method) == method,
            col(VisitTask.status) == "open",
        )
        .order_by(col(VisitTask.due_on))
        .limit(1)
        .with_for_update()
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def agent_loads(
    session: AsyncSession, region: str, method: str, due_on: date
) -> list[AgentLoad]:
    """Active agents of a region able to do `method`, with their open-task counts."""
    is_open = col(VisitTask.status) == "open"
    stmt = (
        select(
            col(Agent.agent_id),
            col(Agent.daily_capacity),
            func.count(col(VisitTask.task_id)).filter(is_open).label("open_tasks"),
            func.count(col(VisitTask.task_id))
            .filter(is_open, col(VisitTask.due_on) == due_on)
            .label("due_that_day"),
        )
        .outerjoin(VisitTask, col(VisitTask.agent_id) == col(Agent.agent_id))
        .where(
            col(Agent.region) == region,
            col(Agent.active).is_(True),
            col(Agent.methods).contains([method]),
        )
        .group_by(col(Agent.agent_id), col(Agent.daily_capacity))
    )
    return [
        AgentLoad(row.agent_id, row.open_tasks, row.due_that_day, row.daily_capacity)
        for row in (await session.execute(stmt)).all()
    ]


async def list_tasks(
    session: AsyncSession, who: Principal, query: TaskQuery, *, to_item: Callable[[VisitTask], T]
) -> Page[T]:
    """A page of the tasks `who` may read, narrowed by the query's filters, oldest first."""
    stmt = select(VisitTask).where(visible_tasks(who))
    # An agent's own tasks are its list: the agent it names is not a filter on them.
    agent_id = None if who.is_agent else query.agent_id
    if agent_id is not None:
        stmt = stmt.where(col(VisitTask.agent_id) == agent_id)
    if query.loan_id is not None:
        stmt = stmt.where(col(VisitTask.loan_id) == query.loan_id)
    if query.status is not None:
        stmt = stmt.where(col(VisitTask.status) == query.status)
    if query.due_from is not None:
        stmt = stmt.where(col(VisitTask.due_on) >= query.due_from)
    if query.due_to is not None:
        stmt = stmt.where(col(VisitTask.due_on) <= query.due_to)
    return await keyset_page(
        session, stmt, key=TASK_ORDER, cursor=query.cursor, limit=query.limit, to_item=to_item
    )
