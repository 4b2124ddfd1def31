"""All scheduler SQL."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.scheduler.models import Agent, Loan, VisitTask
from services.scheduler.policy import AgentLoad
from shared.pagination import Cursor, after


async def get_loan(session: AsyncSession, loan_id: str, *, for_update: bool = False) -> Loan | None:
    stmt = select(Loan).where(col(Loan.loan_id) == loan_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_loan_visible_to(
    session: AsyncSession, loan_id: str, agent_id: str | None
) -> Loan | None:
    """The loan, if the reader may see it: an agent only a loan it has been given a task
    for, others any. One statement either way, so an agent cannot tell by the time of the
    answer whether a loan it may not see exists."""
    stmt = select(Loan).where(col(Loan.loan_id) == loan_id)
    if agent_id is not None:
        stmt = stmt.where(
            exists().where(col(VisitTask.loan_id) == loan_id, col(VisitTask.agent_id) == agent_id)
        )
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
    session: AsyncSession,
    *,
    agent_id: str | None,
    loan_id: str | None,
    status: str | None,
    due_from: date | None,
    due_to: date | None,
    cursor: Cursor | None,
    limit: int,
) -> list[VisitTask]:
    stmt = select(VisitTask)
    if agent_id is not None:
        stmt = stmt.where(col(VisitTask.agent_id) == agent_id)
    if loan_id is not None:
        stmt = stmt.where(col(VisitTask.loan_id) == loan_id)
    if status is not None:
        stmt = stmt.where(col(VisitTask.status) == status)
    if due_from is not None:
        stmt = stmt.where(col(VisitTask.due_on) >= due_from)
    if due_to is not None:
        stmt = stmt.where(col(VisitTask.due_on) <= due_to)
    if cursor is not None:
        stmt = stmt.where(after(col(VisitTask.created_at), col(VisitTask.task_id), cursor))
    stmt = stmt.order_by(col(VisitTask.created_at), col(VisitTask.task_id)).limit(limit)
    return list((await session.execute(stmt)).scalars())
