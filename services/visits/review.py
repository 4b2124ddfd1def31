"""Supervisor review (maker-checker) and corrections: use cases in the caller's transaction.

`visit-completed` fires when a visit is submitted, not when it is approved: what a visit
found (a pledged car, a lost job) must reach the risk desk and planning at once, not wait
in a supervisor's queue. Review is the quality check afterwards:

- a supervisor of the visit's region approves or returns a submitted version, with a
  reason to return it; not one it recorded itself (maker is not checker); once per
  version. Decisions are chained per loan (chain.REVIEW_FIELDS).
- a returned version goes back to its agent, who answers with a correction: a new version
  naming the one it corrects, captured, chained and announced like any visit, and
  reviewed in turn. The corrected version is `superseded`, and stays provable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from services.visits import chain, repository, service
from services.visits.models import Visit, VisitReview
from services.visits.schemas import (
    STATE_AFTER,
    CorrectionIn,
    ReviewIn,
    ReviewState,
    VisitIn,
)
from shared.auth import Principal
from shared.errors import Problem, not_found
from shared.vocabulary import VisitMethod

log = logging.getLogger(__name__)


async def review_visit(
    session: AsyncSession, who: Principal, visit_id: uuid.UUID, body: ReviewIn
) -> tuple[Visit, bool]:
    """Record the supervisor's decision on the version; returns it and whether this call
    decided (the same decision resent by the same supervisor replays)."""
    repository.supervised_region(who)
    # Another region's visit looks absent, as it does to every read of theirs.
    visit = await repository.lock_visit_visible_to(session, visit_id, who)
    if visit is None:
        raise not_found("visit")
    if visit.agent_id == who.sub:
        raise Problem(403, "Forbidden", "a supervisor cannot review a visit it recorded itself")
    earlier = (await repository.reviews_of(session, [visit_id])).get(visit_id)
    if earlier is not None:
        if (earlier.decision, earlier.reason, earlier.reviewed_by) == (
            body.decision,
            body.reason,
            who.sub,
        ):
            return visit, False
        raise Problem(409, "Conflict", f"this visit was already reviewed ({earlier.decision})")
    if visit.review_state == ReviewState.SUPERSEDED:
        raise Problem(
            409, "Conflict", "a correction supersedes this version; review the latest version"
        )
    entry = await repository.get_chain_entry(session, visit_id)
    if entry is None:
        raise Problem(409, "Conflict", "the visit has no chain entry to review against")
    await repository.lock_chain_of(session, visit.loan_id)
    review = VisitReview(
        visit_id=visit_id,
        loan_id=visit.loan_id,
        decision=body.decision,
        reason=body.reason,
        reviewed_by=who.sub,
        seq=0,
        prev_hash="",
        payload_hash="",
        entry_hash="",
    )
    link = chain.next_review_link(
        await repository.review_chain_head(session, visit.loan_id),
        {
            **review.model_dump(include=set(chain.REVIEW_FIELDS)),
            "decision": str(review.decision),
            "visit_entry_hash": entry.entry_hash,
        },
    )
    review.seq, review.prev_hash = link.seq, link.prev_hash
    review.payload_hash, review.entry_hash = link.payload_hash, link.entry_hash
    await repository.add_review(session, review)
    state = STATE_AFTER[body.decision]
    await repository.set_review_state(session, visit_id, state)
    visit.review_state = state
    log.info("visit %s %s by %s", visit_id, state, who.sub)
    return visit, True


def correction_hash(visit_id: uuid.UUID, body: CorrectionIn) -> str:
    """What a retry of a correction must repeat: the corrected version and the body."""
    canonical = json.dumps(
        {"corrects_visit_id": str(visit_id), **body.model_dump(mode="json")},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def correct_visit(
    session: AsyncSession,
    who: Principal,
    visit_id: uuid.UUID,
    idempotency_key: str,
    body: CorrectionIn,
) -> tuple[Visit, bool]:
    """Record the correction of the caller's own version as the visit's next version;
    returns it and whether this call created it (a retry under the same key replays)."""
    request_hash = correction_hash(visit_id, body)
    earlier = await repository.get_by_idempotency_key(session, who.sub, idempotency_key)
    if earlier is not None:
        return service.replay(earlier, request_hash), False
    original = await repository.lock_visit_visible_to(session, visit_id, who)
    if original is None:
        raise not_found("visit")
    if original.agent_id != who.sub or original.method == VisitMethod.THIRD_PARTY:
        raise Problem(403, "Forbidden", "only the agent who recorded a visit corrects it")
    if original.review_state == ReviewState.SUPERSEDED:
        raise Problem(409, "Conflict", "this version is already corrected; correct the latest")
    if original.review_state == ReviewState.APPROVED:
        raise Problem(409, "Conflict", "an approved visit is final")
    capture = VisitIn.model_validate(
        {
            **body.model_dump(),
            "task_id": original.task_id,
            "loan_id": original.loan_id,
            "method": original.method,
        }
    )
    service.check_capture_rules(capture)
    recorded = await service.record_visit(
        session,
        agent_id=who.sub,
        idempotency_key=idempotency_key,
        body=capture,
        region=original.region,
        request_hash=request_hash,
        corrects=original,
    )
    if recorded.created:
        log.info("visit %s corrected by version %s", visit_id, recorded.visit.visit_id)
    return recorded.visit, recorded.created
