"""All alerts SQL."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.alerts.models import Alert
from shared.pagination import Cursor, after


async def add_alert(session: AsyncSession, alert: Alert) -> bool:
    """Insert an alert; False when its source event already raised this rule."""
    values = alert.model_dump()
    result = await session.execute(
        insert(Alert)
        .values(**values)
        .on_conflict_do_nothing(constraint="uq_alerts_source_event_rule")
        .returning(col(Alert.alert_id))
    )
    return result.first() is not None


async def get_alert(
    session: AsyncSession, alert_id: uuid.UUID, *, for_update: bool = False
) -> Alert | None:
    stmt = select(Alert).where(col(Alert.alert_id) == alert_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_alerts(
    session: AsyncSession,
    *,
    loan_id: str | None,
    status: str | None,
    severity: str | None,
    rule: str | None,
    category: str | None,
    cursor: Cursor | None,
    limit: int,
) -> list[Alert]:
    """Alerts by filters, oldest first: the triage queue is worked in arrival order."""
    stmt = select(Alert)
    for column, value in (
        (Alert.loan_id, loan_id),
        (Alert.status, status),
        (Alert.severity, severity),
        (Alert.rule, rule),
        (Alert.category, category),
    ):
        if value is not None:
            stmt = stmt.where(col(column) == value)
    if cursor is not None:
        stmt = stmt.where(after(col(Alert.created_at), col(Alert.alert_id), cursor))
    stmt = stmt.order_by(col(Alert.created_at), col(Alert.alert_id)).limit(limit)
    return list((await session.execute(stmt)).scalars())
