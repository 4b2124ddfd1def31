"""Visits use cases. They run inside the caller's transaction and never commit."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote, urlencode

import asyncpg
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.visits import append, capture_rules, chain, repository
from services.visits.evidence_types import EvidenceKind
from services.visits.grants import TaskGrants
from services.visits.loan_regions import LoanRegions
from services.visits.models import Evidence, Visit, VisitReview
from services.visits.schemas import (
    ChainBreak,
    ChainProof,
    ChainVerification,
    EvidenceRef,
    GeoPoint,
    ReviewOut,
    ReviewState,
    ThirdPartyReportIn,
    VisitIn,
    VisitOut,
)
from shared.auth import Principal
from shared.db import utcnow
from shared.errors import Problem, not_found
from shared.events import EventEnvelope, VisitCompleted, VisitFindings
from shared.pii import mask_pii
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
    if earlier is None and body.visit_id is not None:
        # The device's own id for the visit: a replay even once the key has expired.
        earlier = await same_visit_id(session, agent_id, body.visit_id)
    return replay(earlier, body.request_hash()) if earlier is not None else None


async def same_visit_id(session: AsyncSession, agent_id: str, visit_id: uuid.UUID) -> Visit | None:
    """The visit already recorded under a client-generated id, if it is this caller's; a
    409 if another's (an id is one visit's, whoever chose it)."""
    earlier = await repository.get_by_id(session, visit_id)
    if earlier is not None and earlier.agent_id != agent_id:
        raise Problem(409, "Conflict", "this visit_id is already another visit's")
    return earlier


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


async def authorize_capture(
    scheduler: ServiceClient,
    who: Principal,
    body: VisitIn,
    grants: TaskGrants | None = None,
    regions: LoanRegions | None = None,
) -> str:
    """May `who` record this visit? Asked of the scheduler, which owns loans and tasks, before
    any transaction opens. An agent records visits only on loans it has been given a task for
    (open or done); a supervisor on the loans of the region its token names. A loan or task
    the caller may not touch looks absent (404), so nobody can probe others' portfolios.
    Returns the loan's region, which the visit keeps (supervisors read by it). `grants`
    remembers the scheduler's yeses (services/visits/grants.py), `regions` the loans'
    regions (services/visits/loan_regions.py)."""
    if not who.is_agent:
        repository.supervised_region(who)
    try:
        if body.task_id is not None:
            task = await scheduler.get_json(f"/v1/tasks/{body.task_id}", cached=False)
            _check_task(task, who, body.loan_id)
        if who.is_agent and body.task_id is None:
            pair = (who.sub, body.loan_id)
            if grants is None or pair not in grants:
                if not await _has_task_on(scheduler, who.sub, body.loan_id):
                    raise not_found("loan")
                if grants is not None:
                    grants.add(pair)
        # Cached for a few seconds: a loan's region does not change per visit.
        if regions is not None:
            region = await regions.region(body.loan_id, partial(_region_of, scheduler))
        else:
            loan = await registered_loan(scheduler, body.loan_id)
            region = loan.get("region") if loan is not None else None
    except OwnerUnavailable as exc:
        raise scheduler_unavailable(body.loan_id, exc) from exc
    if not isinstance(region, str) or (not who.is_agent and region != who.region):
        raise not_found("loan")
    return region


async def registered_loan(scheduler: ServiceClient, loan_id: str) -> dict[str, Any] | None:
    """The loan as the scheduler registered it; None when it does not know it."""
    return await scheduler.get_json(f"/v1/loans/{quote(loan_id, safe='')}")


async def _region_of(scheduler: ServiceClient, loan_id: str) -> str | None:
    """The loan's region as the scheduler tells it now (LoanRegions caches it)."""
    loan = await scheduler.get_json(f"/v1/loans/{quote(loan_id, safe='')}", cached=False)
    region = loan.get("region") if loan is not None else None
    return region if isinstance(region, str) else None


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


@dataclass(frozen=True)
class Recorded:
    """What `record_visit` did: the visit (this call's, or the one a concurrent retry
    committed first), whether this call created it, and, when it did, the evidence it
    stands on (so its view needs no read back)."""

    visit: Visit
    created: bool
    evidence: list[Evidence]

    def view(self) -> VisitOut:
        """The created visit as the API shows it: nothing reviewed or corrected it yet."""
        return visit_view(self.visit, sorted(self.evidence, key=lambda row: row.evidence_id))


async def record_visit(
    session: AsyncSession,
    *,
    agent_id: str,
    idempotency_key: str | None,
    body: VisitIn,
    region: str | None,
    request_hash: str | None = None,
    corrects: Visit | None = None,
) -> Recorded:
    """Record a visit (already authorised; `region` is its loan's) with the evidence it
    references, chain it and stage its `visit-completed` event, all in the caller's
    transaction. A retry under the same key (or client-generated id), also one racing its
    original, gets the visit recorded first (`created` False; a 409 if its body differs).
    `request_hash` is what a retry must repeat (the body's own hash unless given).
    `corrects` is the version this one corrects (locked by the caller): the new row is its
    next version, and may carry over its evidence. `idempotency_key` None is a submitted
    draft, whose client-generated id is its idempotency.

    One statement for a new capture without evidence (services/visits/append.py): the
    visit, its chain entry, its outbox row and its draft's removal. Listed evidence is
    locked and checked first, as its hashes are chained, and attached after."""
    request_hash = request_hash or body.request_hash()
    visit = _new_visit(agent_id, idempotency_key, body, region, request_hash, corrects)
    try:
        evidence, own = await _check_evidence(session, visit, body, corrects)
    except Problem:
        # A retry's photos are on the visit its original recorded: replay that one.
        earlier = await _earlier(session, agent_id, idempotency_key, body)
        if earlier is None:
            raise
        return Recorded(replay(earlier, request_hash), False, [])
    values = visit.model_dump()
    appended = await append.append_visit(
        session, values, **_append_values(values, evidence, draft_id=body.visit_id)
    )
    if appended is None:
        winner = await _concurrent_winner(session, agent_id, idempotency_key, body, corrects)
        if winner is None:
            raise RuntimeError("a visit's unique key is taken, yet no visit holds it")
        return Recorded(replay(winner, request_hash), False, [])
    await repository.attach_evidence(session, visit.visit_id, own)
    if corrects is not None:
        await repository.set_review_state(session, corrects.visit_id, ReviewState.SUPERSEDED)
    _log_recorded(visit.visit_id, visit.loan_id, visit.task_id)
    return Recorded(visit, True, evidence)


def _new_visit(
    agent_id: str,
    idempotency_key: str | None,
    body: VisitIn,
    region: str | None,
    request_hash: str,
    corrects: Visit | None,
) -> Visit:
    return Visit(**_new_values(agent_id, idempotency_key, body, region, request_hash, corrects))


def _new_values(
    agent_id: str,
    idempotency_key: str | None,
    body: VisitIn,
    region: str | None,
    request_hash: str,
    corrects: Visit | None,
) -> dict[str, Any]:
    """A new visit's row, every column (`append.VISIT_COLUMNS`), as `Visit.model_dump()`
    has it: the common capture writes and shows it without an ORM object, whose building
    and dumping were a tenth of its CPU."""
    geo = body.geo
    return {
        "visit_id": body.visit_id or uuid.uuid4(),
        "agent_id": agent_id,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash,
        "task_id": body.task_id,
        "loan_id": body.loan_id,
        "method": body.method,
        "outcome": body.outcome,
        "started_at": body.started_at,
        "ended_at": body.ended_at,
        "findings": body.findings.model_dump(mode="json"),
        "geo_lat": geo.lat if geo else None,
        "geo_lon": geo.lon if geo else None,
        "notes": body.notes,
        # Given, not defaulted: pydantic inspects a default factory's signature on every
        # instance it fills, a tenth of a capture's CPU in the bench's profile.
        "created_at": utcnow(),
        "region": region,
        "corrects_visit_id": corrects.visit_id if corrects is not None else None,
        "version": corrects.version + 1 if corrects is not None else 1,
        "carried_evidence": None,
        "review_state": ReviewState.PENDING,
    }


def _append_values(
    visit: Mapping[str, Any], evidence: list[Evidence], *, draft_id: uuid.UUID | None
) -> dict[str, Any]:
    """What services/visits/append.py binds besides the visit's row (`visit`, every
    column): its chain payload, its `visit-completed` event, and the draft it was
    submitted from (or captured under the id of)."""
    event = _completed_event(visit)
    return {
        "payload_hash": chain.payload_hash(_chained(visit, evidence), chain.CURRENT_FORMAT),
        "event": append.JsonText(event.model_dump_json()),
        "event_id": event.event_id,
        "topic": event.event_type,
        "chained_at": utcnow(),
        "draft_id": draft_id,
    }


async def record_capture(
    connection: asyncpg.Connection,
    *,
    agent_id: str,
    idempotency_key: str,
    body: VisitIn,
    region: str,
) -> VisitOut | None:
    """`record_visit` for the common capture: a new visit (no correction) listing no
    evidence, written by the one statement on a bare asyncpg connection, in autocommit.
    Its view, or None when one of its unique keys is taken (a retry, or a task already
    visited): nothing was written, and `record_visit` in a session tells which and
    answers."""
    row = _new_values(agent_id, idempotency_key, body, region, body.request_hash(), None)
    params = append.capture_params(row, **_append_values(row, [], draft_id=body.visit_id))
    if await append.append_on_driver(connection, params) is None:
        return None
    _log_recorded(row["visit_id"], row["loan_id"], row["task_id"])
    return created_view(row, body)


def created_view(row: Mapping[str, Any], body: VisitIn) -> VisitOut:
    """A visit just created from `body` (`row`: its columns) as the API shows it, built
    from values validated already (`body`'s): not validated again, which cost a capture
    as much as its response's serialisation. Notes are masked as `MaskedText` does."""
    notes = row["notes"]
    return VisitOut.model_construct(
        visit_id=row["visit_id"],
        agent_id=row["agent_id"],
        created_at=row["created_at"],
        task_id=row["task_id"],
        loan_id=row["loan_id"],
        method=row["method"],
        outcome=row["outcome"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        findings=body.findings,
        geo=body.geo,
        notes=mask_pii(notes) if notes is not None else None,
        evidence=[],
        version=row["version"],
        corrects_visit_id=row["corrects_visit_id"],
        corrected_by=None,
        review_state=row["review_state"],
        review=None,
    )


def _log_recorded(visit_id: uuid.UUID, loan_id: str, task_id: uuid.UUID | None) -> None:
    log.info("visit %s recorded for loan %s (task %s)", visit_id, loan_id, task_id)


async def _check_evidence(
    session: AsyncSession, visit: Visit, body: VisitIn, corrects: Visit | None
) -> tuple[list[Evidence], list[uuid.UUID]]:
    """Check the evidence the visit lists: each must be the capturing agent's own upload
    and on no other visit (another agent's looks absent, as everywhere), or, for a
    correction, what the corrected version stands on (carried over: it stays attached to
    that version, whose proof must keep holding; `visit.carried_evidence` names it); a
    completed field visit must list a photo. A 422 naming `body.evidence[i]` otherwise.
    The rows are locked, so two visits listing the same photo at once are decided one
    after the other. Returns the rows the visit stands on, and the ids to attach to it."""
    wanted = body.evidence
    found = await repository.lock_evidence(session, wanted)
    carriable = {*(corrects.carried_evidence or ())} if corrects is not None else set[uuid.UUID]()
    errors: list[dict[str, str]] = []
    carried: list[uuid.UUID] = []
    for index, evidence_id in enumerate(wanted):
        row = found.get(evidence_id)
        if row is None or row.uploaded_by != visit.agent_id:
            message = "no such evidence uploaded by you"
        elif corrects is not None and (
            row.visit_id == corrects.visit_id or row.evidence_id in carriable
        ):
            carried.append(evidence_id)
            continue
        elif row.visit_id is not None:
            message = "already attached to another visit"
        else:
            continue
        errors.append({"field": f"body.evidence[{index}]", "message": message})
    attached = [found[evidence_id] for evidence_id in wanted if evidence_id in found]
    if (
        not errors
        and capture_rules.needs_a_photo(body)
        and not any(row.kind == EvidenceKind.PHOTO for row in attached)
    ):
        errors.append({"field": "body.evidence", "message": capture_rules.NEEDS_A_PHOTO})
    if errors:
        raise Problem(
            422, "Unprocessable Content", "the visit's evidence cannot be attached", errors=errors
        )
    if carried:
        visit.carried_evidence = carried
    return attached, [e for e in wanted if e not in set(carried)]


_CHAINED = (*chain.CHAINED_FIELDS, *chain.VERSION_FIELDS)


def _chained(visit: Mapping[str, Any], evidence: list[Evidence]) -> dict[str, Any]:
    """What the visit's chain entry commits to, in the current format: its recorded fields,
    its version's place, its loan's region and its evidence's hashes (`visit`: its row)."""
    return {
        **{name: visit[name] for name in _CHAINED},
        chain.REGION: visit["region"],
        chain.EVIDENCE: chain.evidence_items((row.evidence_id, row.sha256) for row in evidence),
    }


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
    reviews = chain.Verification(
        hasher=chain.review_payload_hash, formats=(1,), noun="review decision"
    )
    if walk.first_break is None:
        async for entry in repository.stored_reviews(session, loan_id):
            reviews.feed([entry])
            if reviews.first_break is not None:
                break
    broken: ChainBreak | None = None
    first_break = walk.first_break or reviews.first_break
    if first_break is not None:
        b = first_break
        prefix = "review chain: " if b is reviews.first_break else ""
        broken = ChainBreak(
            loan_id=b.loan_id, seq=b.seq, visit_id=b.visit_id, reason=prefix + b.reason
        )
    else:
        stray = await repository.first_unchained_visit(session, loan_id)
        if stray is not None:
            broken = ChainBreak(
                loan_id=stray.loan_id,
                seq=None,
                visit_id=stray.visit_id,
                reason="the visit has no chain entry (written outside the service)",
            )
    if broken is None:
        misstated = await repository.first_misstated_review(session, loan_id)
        if misstated is not None:
            broken = ChainBreak(
                loan_id=misstated[0],
                seq=None,
                visit_id=misstated[1],
                reason=(
                    f"review_state {misstated[2]} disagrees with the chained review "
                    "decisions and corrections"
                ),
            )
    if broken is not None:
        log.warning(
            "visit chain broken at loan %s seq %s: %s", broken.loan_id, broken.seq, broken.reason
        )
    return ChainVerification(
        loan_id=loan_id,
        entries_checked=walk.checked + reviews.checked,
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


async def _earlier(
    session: AsyncSession, agent_id: str, idempotency_key: str | None, body: VisitIn
) -> Visit | None:
    """The visit recorded under the same key or client-generated id, if any."""
    if idempotency_key is not None:
        earlier = await repository.get_by_idempotency_key(session, agent_id, idempotency_key)
        if earlier is not None:
            return earlier
    if body.visit_id is not None:
        return await same_visit_id(session, agent_id, body.visit_id)
    return None


async def _concurrent_winner(
    session: AsyncSession,
    agent_id: str,
    idempotency_key: str | None,
    body: VisitIn,
    corrects: Visit | None,
) -> Visit | None:
    """The visit a concurrent request committed first under the same key or client id (a
    retry racing the original); a 409 if it was another capture of the same task, or
    another correction of the same version."""
    # Read committed: these statements see the row the other transaction committed.
    earlier = await _earlier(session, agent_id, idempotency_key, body)
    if earlier is not None:
        return earlier
    if corrects is not None:
        raise Problem(409, "Conflict", "this version has already been corrected")
    if body.task_id is not None and await repository.get_by_task(session, body.task_id):
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


def _completed_event(visit: Mapping[str, Any]) -> VisitCompleted:
    """The visit's `visit-completed` event (`visit`: its row)."""
    return VisitCompleted.model_validate(
        {**{name: visit[name] for name in _EVENT_FIELDS}, "occurred_at": visit["created_at"]}
    )


async def view_of(session: AsyncSession, visit: Visit) -> VisitOut:
    """The visit as the API shows it, with its evidence."""
    return (await views_of(session, [visit]))[0]


async def views_of(session: AsyncSession, visits: list[Visit]) -> list[VisitOut]:
    """Visits as the API shows them (a page of them): their evidence, review decisions and
    correcting versions in one query each."""
    ids = [visit.visit_id for visit in visits]
    evidence = await repository.evidence_of(session, visits)
    reviews = await repository.reviews_of(session, ids)
    corrected_by = await repository.corrections_of(session, ids)
    return [
        visit_view(
            visit,
            evidence[visit.visit_id],
            reviews.get(visit.visit_id),
            corrected_by.get(visit.visit_id),
        )
        for visit in visits
    ]


def visit_view(
    visit: Visit,
    evidence: list[Evidence] | None = None,
    review: VisitReview | None = None,
    corrected_by: uuid.UUID | None = None,
) -> VisitOut:
    """The visit as the API shows it, with the evidence it stands on, its review decision
    and the version correcting it (read by the caller: `view_of`, `views_of`)."""
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
        evidence=[
            EvidenceRef(evidence_id=row.evidence_id, kind=row.kind, sha256=row.sha256)
            for row in evidence or []
        ],
        version=visit.version,
        corrects_visit_id=visit.corrects_visit_id,
        corrected_by=corrected_by,
        review_state=visit.review_state,
        review=(
            ReviewOut(
                decision=review.decision,
                reason=review.reason,
                reviewed_by=review.reviewed_by,
                reviewed_at=review.reviewed_at,
            )
            if review is not None
            else None
        ),
    )
