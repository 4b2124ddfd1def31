"""Alerts REST API: the operations desk's triage of risk alerts."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from services.alerts import repository, service
from services.alerts.models import Alert
from services.alerts.schemas import AlertOut, AlertStatus, ResolveIn
from shared.app import SessionDep
from shared.auth import Principal, require_roles
from shared.errors import not_found
from shared.events import Category, Severity
from shared.openapi import problems
from shared.pagination import CursorText, Page
from shared.validation import Identifier

router = APIRouter(prefix="/v1")

# Who reads which alerts is the repository's (`READERS`, `visible_alerts`); only the
# operations desk (and admins) work them.
Reader = Annotated[Principal, Depends(require_roles(*repository.READERS))]
Operator = Annotated[Principal, Depends(require_roles("ops", "admin"))]


@router.get("/alerts", response_model=Page[AlertOut])
async def list_alerts(
    session: SessionDep,
    who: Reader,
    loan_id: Annotated[Identifier | None, Query()] = None,
    status: AlertStatus | None = None,
    severity: Severity | None = None,
    rule: Annotated[Identifier | None, Query()] = None,
    category: Category | None = None,
    cursor: Annotated[CursorText | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[AlertOut]:
    """Alerts by filters, oldest first, a page at a time."""
    return await repository.list_alerts(
        session,
        who,
        loan_id=loan_id,
        status=status,
        severity=severity,
        rule=rule,
        category=category,
        cursor=cursor,
        limit=limit,
        to_item=_alert_out,
    )


@router.get("/alerts/{alert_id}", response_model=AlertOut, responses=problems(404))
async def get_alert(alert_id: uuid.UUID, session: SessionDep, who: Reader) -> AlertOut:
    alert = await repository.get_alert_visible_to(session, alert_id, who)
    if alert is None:
        raise not_found("alert")
    return _alert_out(alert)


@router.post("/alerts/{alert_id}/ack", response_model=AlertOut, responses=problems(404, 409))
async def acknowledge(alert_id: uuid.UUID, session: SessionDep, who: Operator) -> AlertOut:
    alert = await service.acknowledge(session, alert_id, who.sub)
    return AlertOut.model_validate(alert, from_attributes=True)


@router.post("/alerts/{alert_id}/resolve", response_model=AlertOut, responses=problems(404, 409))
async def resolve(
    alert_id: uuid.UUID, body: ResolveIn, session: SessionDep, who: Operator
) -> AlertOut:
    alert = await service.resolve(session, alert_id, body, who.sub)
    return AlertOut.model_validate(alert, from_attributes=True)


def _alert_out(alert: Alert) -> AlertOut:
    return AlertOut.model_validate(alert, from_attributes=True)
