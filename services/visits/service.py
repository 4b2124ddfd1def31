"""Visits use cases. They run inside the caller's transaction and never commit."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.visits import repository
from services.visits.models import Visit, outbox
from services.visits.schemas import GeoPoint, VisitIn, VisitOut
from shared.errors import Problem, not_found
from shared.events import EventEnvelope, VisitCompleted, VisitFindings
from shared.outbox import enqueue
from shared.service_client import OwnerUnavailable, ServiceClient

log = logging.getLogger(__name__)


async def record_visit(
    session: AsyncSession,
    scheduler: ServiceClient,
    *,
    agent_id: str,
    idempotency_key: str,
    body: VisitIn,
) -> tuple[Visit, bool]:
    """Record an agent's visit and stage its `visit-completed` event in the same transaction.

    Idempotent per (agent, key): a retry with the same body gets the first visit back, the
    same key with another body is a 409. Returns the visit and whether this call created it.
    """
    request_hash = body.request_hash()
    # Before asking the scheduler: a retry of a recorded visit must succeed even after
    # the task has been completed by that very visit, or while the scheduler is down.
    earlier = await repository.get_by_idempotency_key(session, agent_id, idempotency_key)
    if earlier is not None:
        return _replay(earlier, request_hash), False
    if body.task_id is not None:
        await _check_task(scheduler, agent_id, body.task_id, body.loan_id)

    visit = Visit(
        agent_id=agent_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        task_id=body.task_id,
        loan_id=body.loan_id,
        method=body.method,
        outcome=body.outcome,
        started_at=body.started_at,
        ended_at=body.ended_at,
        findings=body.findings.model_dump(mode="json"),
        geo_lat=body.geo.lat if body.geo else None,
        geo_lon=body.geo.lon if body.geo else None,
        notes=body.notes,
    )
    try:
        # A savepoint, so that losing a race leaves the request's transaction usable.
        async with session.begin_nested():
            await repository.add_visit(session, visit)
            await enqueue(session, outbox, _completed_event(visit))
    except IntegrityError as exc:
        winner = await _concurrent_winner(session, agent_id, idempotency_key, body.task_id)
        if winner is None:
            # Not the error itself: its message carries the bound values, notes included.
            raise RuntimeError(f"unexpected conflict recording a visit: {exc.orig}") from None
        log.info("visit capture lost a race to visit %s", winner.visit_id)
        return _replay(winner, request_hash), False
    log.info(
        "visit %s recorded for loan %s (task %s)", visit.visit_id, visit.loan_id, visit.task_id
    )
    return visit, True


async def _concurrent_winner(
    session: AsyncSession, agent_id: str, idempotency_key: str, task_id: uuid.UUID | None
) -> Visit | None:
    """The visit a concurrent request committed first under the same key (a retry racing
    the original); a 409 if it was another capture of the same task."""
    # Read committed: this statement sees the row the other transaction committed.
    earlier = await repository.get_by_idempotency_key(session, agent_id, idempotency_key)
    if earlier is not None:
        return earlier
    if task_id is not None and await repository.get_by_task(session, task_id) is not None:
        raise Problem(409, "Conflict", "a visit has already been recorded for this task")
    return None


def _replay(earlier: Visit, request_hash: str) -> Visit:
    if earlier.request_hash != request_hash:
        raise Problem(
            409,
            "Conflict",
            "this Idempotency-Key was already used for a different visit",
        )
    log.info("idempotent replay of visit %s", earlier.visit_id)
    return earlier


async def _check_task(
    scheduler: ServiceClient, agent_id: str, task_id: uuid.UUID, loan_id: str
) -> None:
    """The task must be the agent's own, of this loan, and still open (the scheduler owns it)."""
    try:
        # Uncached: a task's status changes as visits land, and this decision lets a write in.
        task = await scheduler.get_json(f"/v1/tasks/{task_id}", cached=False)
    except OwnerUnavailable as exc:
        log.warning("scheduler unavailable checking task %s: %s", task_id, exc)
        raise Problem(
            503,
            "Service Unavailable",
            "the scheduler cannot confirm the task right now; retry later",
            headers={"Retry-After": "5"},
        ) from exc
    # Another agent's task, or one of another loan, looks absent: no probing of others' work.
    if task is None or task.get("agent_id") != agent_id or task.get("loan_id") != loan_id:
        raise not_found("task")
    if task.get("status") != "open":
        raise Problem(
            409, "Conflict", f"task is {task.get('status')}; only an open task is visited"
        )


# What a visit tells the other services is what the event contract names (notes and
# position stay here); the envelope's own fields are set by the event, loan_id aside.
_EVENT_FIELDS = (set(VisitCompleted.model_fields) - set(EventEnvelope.model_fields)) | {"loan_id"}


def _completed_event(visit: Visit) -> VisitCompleted:
    return VisitCompleted.model_validate(
        {**visit.model_dump(include=_EVENT_FIELDS), "occurred_at": visit.created_at}
    )


def visible_to(visit: Visit | None, agent_id: str | None) -> Visit:
    """The visit, if the reader may see it: agents see only their own (others' look absent)."""
    if visit is None or (agent_id is not None and visit.agent_id != agent_id):
        raise not_found("visit")
    return visit


def visit_view(visit: Visit) -> VisitOut:
    """The visit as the API shows it."""
    geo = (
        GeoPoint(lat=visit.geo_lat, lon=visit.geo_lon)
        if visit.geo_lat is not None and visit.geo_lon is not None
        else None
    )
    return VisitOut(
        visit_id=visit.visit_id,
        agent_id=visit.agent_id,
        created_at=visit.created_at,
        task_id=visit.task_id,
        loan_id=visit.loan_id,
        method=visit.method,
        outcome=visit.outcome,
        started_at=visit.started_at,
        ended_at=visit.ended_at,
        findings=VisitFindings.model_validate(visit.findings),
        geo=geo,
        notes=visit.notes,
    )
