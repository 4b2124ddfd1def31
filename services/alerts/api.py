"""Alerts REST API: the operations desk's triage of risk alerts."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import AwareDatetime

from services.alerts import repository, service
from services.alerts.models import Alert
from services.alerts.schemas import (
    AlertDetailOut,
    AlertOut,
    AlertStatus,
    AlertSummaryOut,
    AssignIn,
    ResolveIn,
    StartIn,
)
from shared.app import SessionDep
from shared.auth import Principal, require_roles
from shared.errors import Problem, not_found
from shared.events import Category, Severity
from shared.openapi import problems
from shared.pagination import CursorText, Page
from shared.validation import Identifier

router = APIRouter(prefix="/v1")

# Who reads which alerts is the repository's (`READERS`, `visible_alerts`); only the
# operations desk (and admins) work them.
Reader = Annotated[Principal, Depends(require_roles(*repository.READERS))]
Operator = Annotated[Principal, Depends(require_roles("ops", "admin"))]


def alert_filter(
    loan_id: Annotated[Identifier | None, Query()] = None,
    status: AlertStatus | None = None,
    severity: Severity | None = None,
    rule: Annotated[Identifier | None, Query()] = None,
    category: Category | None = None,
    region: Annotated[Identifier | None, Query()] = None,
    assignee: Annotated[Identifier | None, Query()] = None,
    created_from: Annotated[AwareDatetime | None, Query()] = None,
    created_before: Annotated[AwareDatetime | None, Query()] = None,
    supervisor_queue: bool | None = None,
) -> repository.AlertFilter:
    """The desk's filters: region is the loan's; created_from inclusive, created_before
    exclusive; supervisor_queue true for alerts that missed their acknowledgement SLA."""
    return repository.AlertFilter(
        loan_id=loan_id,
        status=status,
        severity=severity,
        rule=rule,
        category=category,
        region=region,
        assignee=assignee,
        created_from=created_from,
        created_before=created_before,
        supervisor_queue=supervisor_queue,
    )


Filters = Annotated[repository.AlertFilter, Depends(alert_filter)]


@router.get("/alerts", response_model=Page[AlertOut])
async def list_alerts(
    session: SessionDep,
    who: Reader,
    filters: Filters,
    cursor: Annotated[CursorText | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[AlertOut]:
    """Alerts by filters, oldest first, a page at a time."""
    return await repository.list_alerts(
        session, who, filters, cursor=cursor, limit=limit, to_item=_alert_out
    )


@router.get("/alerts/summary", response_model=AlertSummaryOut)
async def summary(session: SessionDep, who: Reader, filters: Filters) -> AlertSummaryOut:
    """Counts for the desk's dashboard by rule, severity and status (the same filters)."""
    rows = await repository.summary(session, who, filters)
    by: dict[str, Counter[str]] = {"rule": Counter(), "severity": Counter(), "status": Counter()}
    for rule, severity, status, count in rows:
        by["rule"][rule] += count
        by["severity"][severity] += count
        by["status"][status] += count
    return AlertSummaryOut(
        total=sum(by["status"].values()),
        by_rule=dict(sorted(by["rule"].items())),
        by_severity=dict(sorted(by["severity"].items())),
        by_status=dict(sorted(by["status"].items())),
    )


# The alert's version as its ETag; a write may send it back as If-Match.
IfMatch = Annotated[str | None, Header(alias="If-Match")]


def expected_version(if_match: str | None) -> int | None:
    """The version an If-Match names (None: no precondition). One that is no version of
    ours cannot match: 412, as for a stale one."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not tag.isdigit() or len(tag) > 9:
        raise Problem(412, "Precondition Failed", "If-Match names no version of this alert")
    return int(tag)


@router.get("/alerts/{alert_id}", response_model=AlertDetailOut, responses=problems(404))
async def get_alert(
    alert_id: uuid.UUID, session: SessionDep, who: Reader, response: Response
) -> AlertDetailOut:
    """The alert with its whole history; its ETag is the version a write may name."""
    alert = await repository.get_alert_visible_to(session, alert_id, who)
    if alert is None:
        raise not_found("alert")
    history = await service.history(session, alert_id)
    response.headers["ETag"] = service.etag(alert)
    return AlertDetailOut.model_validate(
        {**_alert_out(alert).model_dump(), "history": [h.model_dump() for h in history]}
    )


WRITE_PROBLEMS = problems(404, 409, 412)


@router.post("/alerts/{alert_id}/ack", response_model=AlertOut, responses=WRITE_PROBLEMS)
async def acknowledge(
    alert_id: uuid.UUID,
    session: SessionDep,
    who: Operator,
    response: Response,
    if_match: IfMatch = None,
) -> AlertOut:
    alert = await service.acknowledge(session, alert_id, who.sub, expected_version(if_match))
    return _written(alert, response)


@router.post("/alerts/{alert_id}/start", response_model=AlertOut, responses=WRITE_PROBLEMS)
async def start(
    alert_id: uuid.UUID,
    body: StartIn,
    session: SessionDep,
    who: Operator,
    response: Response,
    if_match: IfMatch = None,
) -> AlertOut:
    """An acknowledged alert is being worked (in_progress)."""
    alert = await service.start(session, alert_id, body, who.sub, expected_version(if_match))
    return _written(alert, response)


@router.post("/alerts/{alert_id}/resolve", response_model=AlertOut, responses=WRITE_PROBLEMS)
async def resolve(
    alert_id: uuid.UUID,
    body: ResolveIn,
    session: SessionDep,
    who: Operator,
    response: Response,
    if_match: IfMatch = None,
) -> AlertOut:
    """Resolve with the action taken, or dismiss (action `dismiss`) with the reason."""
    alert = await service.resolve(session, alert_id, body, who.sub, expected_version(if_match))
    return _written(alert, response)


@router.post("/alerts/{alert_id}/assign", response_model=AlertOut, responses=WRITE_PROBLEMS)
async def assign(
    alert_id: uuid.UUID,
    body: AssignIn,
    session: SessionDep,
    who: Operator,
    response: Response,
    if_match: IfMatch = None,
) -> AlertOut:
    alert = await service.assign(session, alert_id, body, who.sub, expected_version(if_match))
    return _written(alert, response)


def _written(alert: Alert, response: Response) -> AlertOut:
    response.headers["ETag"] = service.etag(alert)
    return _alert_out(alert)


def _alert_out(alert: Alert) -> AlertOut:
    return AlertOut.model_validate(alert, from_attributes=True)
