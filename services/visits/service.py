"""Visits use cases. They run inside the caller's transaction and never commit."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.visits import capture_rules, chain, repository
from services.visits.models import Visit, VisitChainEntry, outbox
from services.visits.schemas import (
    ChainBreak,
    ChainProof,
    ChainVerification,
    GeoPoint,
    ThirdPartyReportIn,
    VisitIn,
    VisitOut,
)
from shared.auth import Principal
from shared.errors import Problem, not_found
from shared.events import EventEnvelope, VisitCompleted, VisitFindings
from shared.outbox import enqueue
from shared.service_client import OwnerUnavailable, ServiceClient

log = logging.getLogger(__name__)


async def earlier_capture(
    session: AsyncSession, agent_id: str, idempotency_key: str, body: VisitIn
) -> Visit | None:
    """The visit this key already recorded for the agent, or None.

    Looked up before the scheduler is asked anything: a retry of a recorded visit must
    succeed even after that very visit completed the task, or while the scheduler is down.
    The same key with another body is a 409.
    """
    earlier = await repository.get_by_idempotency_key(session, agent_id, idempotency_key)
    return replay(earlier, body.request_hash()) if earlier is not None else None


def check_capture_rules(body: VisitIn) -> None:
    """A 422 naming every field that breaks the rules of the visit's method and outcome."""
    errors = capture_rules.violations(body)
    if errors:
        raise Problem(
            422,
            "Unprocessable Content",
            "the visit breaks the capture rules of its method and outcome",
            errors=errors,
        )


async def authorize_capture(scheduler: ServiceClient, who: Principal, body: VisitIn) -> None:
    """May `who` record this visit? Asked of the scheduler, which owns loans and tasks, before
    any transaction opens. An agent records visits only on loans it has been given a task for
    (open or done); a supervisor on the loans of the region its token names. A loan or task
    the caller may not touch looks absent (404), so nobody can probe others' portfolios."""
    if not who.is_agent and who.region is None:
        raise Problem(403, "Forbidden", "a supervisor's token must name the region it oversees")
    try:
        if body.task_id is not None:
            task = await scheduler.get_json(f"/v1/tasks/{body.task_id}", cached=False)
            _check_task(task, who, body.loan_id)
        if who.is_agent:
            if body.task_id is None and not await _has_task_on(scheduler, who.sub, body.loan_id):
                raise not_found("loan")
        else:
            loan = await registered_loan(scheduler, body.loan_id)
            if loan is None or loan.get("region") != who.region:
                raise not_found("loan")
    except OwnerUnavailable as exc:
        raise scheduler_unavailable(body.loan_id, exc) from exc


async def registered_loan(scheduler: ServiceClient, loan_id: str) -> dict[str, Any] | None:
    """The loan as the scheduler registered it; None when it does not know it."""
    return await scheduler.get_json(f"/v1/loans/{quote(loan_id, safe='')}")


def scheduler_unavailable(loan_id: str, exc: OwnerUnavailable) -> Problem:
    """The 503 a caller retries when the scheduler cannot confirm a loan or task."""
    log.warning("scheduler unavailable confirming loan %s: %s", loan_id, exc)
    return Problem(
        503,
        "Service Unavailable",
        "the scheduler cannot confirm the loan or task right now; retry later",
        headers={"Retry-After": "5"},
    )


async def _has_task_on(scheduler: ServiceClient, agent_id: str, loan_id: str) -> bool:
    """Whether the agent has ever been given a task on the loan, whatever its status.
    Uncached: a task dispatched a minute ago must count."""
    query = urlencode({"loan_id": loan_id, "agent_id": agent_id, "limit": 1})
    page = await scheduler.get_json(f"/v1/tasks?{query}", cached=False)
    return bool(page and page.get("items"))


def _check_task(task: dict[str, Any] | None, who: Principal, loan_id: str) -> None:
    """The task must be of this loan and still open; an agent's must be its own."""
    # Another agent's task, or one of another loan, looks absent: no probing of others' work.
    if (
        task is None
        or task.get("loan_id") != loan_id
        or (who.is_agent and task.get("agent_id") != who.sub)
    ):
        raise not_found("task")
    if task.get("status") != "open":
        raise Problem(
            409, "Conflict", f"task is {task.get('status')}; only an open task is visited"
        )


async def record_visit(
    session: AsyncSession,
    *,
    agent_id: str,
    idempotency_key: str,
    body: VisitIn,
    request_hash: str | None = None,
) -> tuple[Visit, bool]:
    """Record a visit (already authorised) and stage its `visit-completed` event in the same
    transaction. Returns the visit and whether this call created it: a concurrent retry
    under the same key that committed first wins, and its visit is returned. `request_hash`
    is what a retry must repeat (the body's own hash unless given)."""
    request_hash = request_hash or body.request_hash()
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
            await _chain(session, visit)
            await enqueue(session, outbox, _completed_event(visit))
    except IntegrityError as exc:
        winner = await _concurrent_winner(session, agent_id, idempotency_key, body.task_id)
        if winner is None:
            # Not the error itself: its message carries the bound values, notes included.
            raise RuntimeError(f"unexpected conflict recording a visit: {exc.orig}") from None
        log.info("visit capture lost a race to visit %s", winner.visit_id)
        return replay(winner, request_hash), False
    log.info(
        "visit %s recorded for loan %s (task %s)", visit.visit_id, visit.loan_id, visit.task_id
    )
    return visit, True


async def _chain(session: AsyncSession, visit: Visit) -> None:
    """Append the visit to its loan's chain. The lock is taken after the visit's own insert,
    so a losing retry fails on its unique key before it waits for anyone's lock."""
    await repository.lock_chain_of(session, visit.loan_id)
    head = await repository.chain_head(session, visit.loan_id)
    link = chain.next_link(head, visit.model_dump(include=set(chain.CHAINED_FIELDS)))
    await repository.add_chain_entry(
        session,
        VisitChainEntry(
            visit_id=visit.visit_id,
            loan_id=visit.loan_id,
            seq=link.seq,
            prev_hash=link.prev_hash,
            payload_hash=link.payload_hash,
            entry_hash=link.entry_hash,
        ),
    )


async def proof_of(session: AsyncSession, visit: Visit) -> ChainProof:
    entry = await repository.get_chain_entry(session, visit.visit_id)
    if entry is None:
        # Every visit is chained in its own transaction (and older ones by migration 0003).
        raise not_found("chain entry")
    return ChainProof.model_validate(entry, from_attributes=True)


async def verify_chains(session: AsyncSession, loan_id: str | None) -> ChainVerification:
    """Recompute the chains (of one loan, or all) from the stored rows; report the first
    entry that does not hold. Read-only, one streamed query plus one for unchained rows."""
    walk = chain.Verification(report_hash=_report_hash)
    async for entry in repository.stored_chain(session, loan_id):
        walk.feed([entry])
        if walk.first_break is not None:
            break
    broken: ChainBreak | None = None
    if walk.first_break is not None:
        b = walk.first_break
        broken = ChainBreak(loan_id=b.loan_id, seq=b.seq, visit_id=b.visit_id, reason=b.reason)
    else:
        stray = await repository.first_unchained_visit(session, loan_id)
        if stray is not None:
            broken = ChainBreak(
                loan_id=stray.loan_id,
                seq=None,
                visit_id=stray.visit_id,
                reason="the visit has no chain entry (written outside the service)",
            )
    if broken is not None:
        log.warning(
            "visit chain broken at loan %s seq %s: %s", broken.loan_id, broken.seq, broken.reason
        )
    return ChainVerification(
        loan_id=loan_id,
        entries_checked=walk.checked,
        intact=broken is None,
        first_break=broken,
    )


def _report_hash(report: Mapping[str, Any]) -> str:
    """The request hash of a stored partner's report, as it was computed on arrival."""
    try:
        return ThirdPartyReportIn.model_validate(dict(report)).request_hash()
    except ValidationError:
        # A row no valid report could produce matches no hash.
        return ""


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


def replay(
    earlier: Visit,
    request_hash: str,
    conflict: str = "this Idempotency-Key was already used for a different visit",
) -> Visit:
    """The visit recorded earlier under the same key, if this is a true retry of it (the
    same request hash); a 409 otherwise."""
    if earlier.request_hash != request_hash:
        raise Problem(409, "Conflict", conflict)
    log.info("idempotent replay of visit %s", earlier.visit_id)
    return earlier


# What a visit tells the other services is what the event contract names (notes and
# position stay here); the envelope's own fields are set by the event, loan_id aside.
_EVENT_FIELDS = (set(VisitCompleted.model_fields) - set(EventEnvelope.model_fields)) | {"loan_id"}


def _completed_event(visit: Visit) -> VisitCompleted:
    return VisitCompleted.model_validate(
        {**visit.model_dump(include=_EVENT_FIELDS), "occurred_at": visit.created_at}
    )


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
