"""All alerts SQL, and who may read what.

The desk reads alerts whole: the roles in `READERS` see every alert, and `visible_alerts`
is where a narrower rule (a supervisor's region, say) would go, applied by every read.

| route                                | ops, supervisor, admin          | agent, integration |
|--------------------------------------|---------------------------------|--------------------|
| `GET /v1/alerts`, `/v1/alerts/{id}`  | every alert (by the filters)    | none (403)         |
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import ColumnElement, select, true
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.alerts.models import Alert
from shared.auth import Principal, Role
from shared.pagination import Page, keyset_page

T = TypeVar("T")

# Supervisors follow alerts; the operations desk (and admins) also work them.
READERS: tuple[Role, ...] = ("ops", "supervisor", "admin")
# Oldest first: the triage queue is worked in arrival order.
ALERT_ORDER = (col(Alert.created_at), col(Alert.alert_id))


def visible_alerts(who: Principal) -> ColumnElement[bool]:
    """The alerts `who` may read: every reader all of them."""
    del who  # every reader sees the whole desk today
    return true()


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


async def get_alert_visible_to(
    session: AsyncSession, alert_id: uuid.UUID, who: Principal
) -> Alert | None:
    """The alert, if `who` may read it (`visible_alerts`); None as if it did not exist."""
    stmt = select(Alert).where(col(Alert.alert_id) == alert_id, visible_alerts(who))
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_alerts(
    session: AsyncSession,
    who: Principal,
    *,
    loan_id: str | None,
    status: str | None,
    severity: str | None,
    rule: str | None,
    category: str | None,
    cursor: str | None,
    limit: int,
    to_item: Callable[[Alert], T],
) -> Page[T]:
    """A page of the alerts `who` may read, by filters, oldest first."""
    stmt = select(Alert).where(visible_alerts(who))
    for column, value in (
        (Alert.loan_id, loan_id),
        (Alert.status, status),
        (Alert.severity, severity),
        (Alert.rule, rule),
        (Alert.category, category),
    ):
        if value is not None:
            stmt = stmt.where(col(column) == value)
    return await keyset_page(
        session, stmt, key=ALERT_ORDER, cursor=cursor, limit=limit, to_item=to_item
    )
