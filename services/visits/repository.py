"""All visits SQL."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.visits.models import Visit
from shared.pagination import Cursor, after


async def get_visit(session: AsyncSession, visit_id: uuid.UUID) -> Visit | None:
    return await session.get(Visit, visit_id)


async def get_by_idempotency_key(
    session: AsyncSession, agent_id: str, idempotency_key: str
) -> Visit | None:
    stmt = select(Visit).where(
        col(Visit.agent_id) == agent_id, col(Visit.idempotency_key) == idempotency_key
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_by_task(session: AsyncSession, task_id: uuid.UUID) -> Visit | None:
    stmt = select(Visit).where(col(Visit.task_id) == task_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def add_visit(session: AsyncSession, visit: Visit) -> None:
    """Insert now, so a unique-constraint conflict surfaces here and not at commit."""
    session.add(visit)
    await session.flush()


async def list_visits(
    session: AsyncSession,
    *,
    agent_id: str | None,
    loan_id: str | None,
    cursor: Cursor | None,
    limit: int,
) -> list[Visit]:
    stmt = select(Visit)
    if agent_id is not None:
        stmt = stmt.where(col(Visit.agent_id) == agent_id)
    if loan_id is not None:
        stmt = stmt.where(col(Visit.loan_id) == loan_id)
    if cursor is not None:
        stmt = stmt.where(after(col(Visit.created_at), col(Visit.visit_id), cursor))
    stmt = stmt.order_by(col(Visit.created_at), col(Visit.visit_id)).limit(limit)
    return list((await session.execute(stmt)).scalars())
