"""Alerts use cases. They run inside the caller's transaction and never commit."""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts import lifecycle, repository, rules
from services.alerts.models import (
    Alert,
    AlertHistory,
    ParkedEvent,
    RepaymentMemory,
    ResolutionAction,
    VisitMemory,
    outbox,
)
from services.alerts.schemas import AssignIn, ResolveIn, StartIn
from services.alerts.triage import AlertState, HistoryEntry, Triage
from shared.errors import Problem, not_found
from shared.events import (
    REPAYMENT_POSTED,
    VISIT_COMPLETED,
    LoanRegistered,
    RepaymentPosted,
    VisitCompleted,
)
from shared.outbox import enqueue_many
from shared.vocabulary import (
    AlertStatus,
    Category,
    RecommendedAction,
    RepaymentStatus,
    Severity,
    VisitOutcome,
)

log = logging.getLogger(__name__)

CLOSED = (AlertStatus.RESOLVED, AlertStatus.DISMISSED)


# --- triage -------------------------------------------------------------------------------


async def get_alert(
    session: AsyncSession, alert_id: uuid.UUID, *, for_update: bool = False
) -> Alert:
    """One alert, or a 404 problem."""
    alert = await repository.get_alert(session, alert_id, for_update=for_update)
    if alert is None:
        raise not_found("alert")
    return alert


async def _for_work(
    session: AsyncSession, alert_id: uuid.UUID, expected_version: int | None
) -> Alert:
    """The alert locked for a desk write; 412 if the writer saw another version of it
    (If-Match), so two people cannot overwrite each other unknowingly."""
    alert = await get_alert(session, alert_id, for_update=True)
    if expected_version is not None and alert.version != expected_version:
        raise Problem(
            412,
            "Precondition Failed",
            f"alert is at version {alert.version}, not {expected_version}; read it again",
            headers={"ETag": etag(alert)},
        )
    return alert


def etag(alert: Alert) -> str:
    return f'"{alert.version}"'


async def transition(
    session: AsyncSession, alert: Alert, to: AlertStatus, who: str, note: str | None
) -> None:
    """Move the alert along the lifecycle table and keep the move in its history."""
    before = AlertStatus(alert.status)
    try:
        name = lifecycle.move(before, to)
    except lifecycle.TransitionRefused as refused:
        raise Problem(409, "Conflict", str(refused)) from refused
    now = datetime.now(UTC)
    alert.status = to
    alert.version += 1
    await _history(session, alert, now, who, name, before, note or name)


async def _history(
    session: AsyncSession,
    alert: Alert,
    at: datetime,
    who: str,
    action: str,
    before: AlertStatus,
    note: str,
) -> None:
    entry = HistoryEntry(
        alert.alert_id, at, who, action, before, AlertStatus(alert.status), alert.severity, note
    )
    await repository.add_history(session, [_fields_of(entry)])


async def acknowledge(
    session: AsyncSession, alert_id: uuid.UUID, who: str, expected_version: int | None = None
) -> Alert:
    """Take an open alert into work. Repeating it is harmless: the first ack is kept."""
    alert = await _for_work(session, alert_id, expected_version)
    if alert.status == AlertStatus.ACKNOWLEDGED:
        return alert
    await transition(session, alert, AlertStatus.ACKNOWLEDGED, who, None)
    alert.acknowledged_at = datetime.now(UTC)
    alert.acknowledged_by = who
    return alert


async def start(
    session: AsyncSession,
    alert_id: uuid.UUID,
    body: StartIn,
    who: str,
    expected_version: int | None = None,
) -> Alert:
    """Someone works the acknowledged alert now (a call, a visit, a plan in the making)."""
    alert = await _for_work(session, alert_id, expected_version)
    await transition(session, alert, AlertStatus.IN_PROGRESS, who, body.note)
    return alert


async def resolve(
    session: AsyncSession,
    alert_id: uuid.UUID,
    body: ResolveIn,
    who: str,
    expected_version: int | None = None,
) -> Alert:
    """Close an alert with the action taken, or dismiss it as a false alarm (with the
    reason). A closed alert stays as it was closed (409), so the record is not rewritten."""
    if body.action == ResolutionAction.CURED:
        raise Problem(
            422,
            "Unprocessable Content",
            "only a posting that brings the loan current cures an alert",
            errors=[{"field": "body.action", "message": "cured is recorded by the service"}],
        )
    dismissed = body.action == ResolutionAction.DISMISS
    if dismissed and not body.note:
        raise Problem(
            422,
            "Unprocessable Content",
            "a dismissal needs its reason",
            errors=[{"field": "body.note", "message": "the reason for dismissing is required"}],
        )
    alert = await _for_work(session, alert_id, expected_version)
    to = AlertStatus.DISMISSED if dismissed else AlertStatus.RESOLVED
    await transition(session, alert, to, who, body.note)
    alert.resolved_at = datetime.now(UTC)
    alert.resolved_by = who
    alert.resolution_action = body.action
    alert.resolution_note = body.note
    return alert


async def assign(
    session: AsyncSession,
    alert_id: uuid.UUID,
    body: AssignIn,
    who: str,
    expected_version: int | None = None,
) -> Alert:
    """Give an active alert to someone on the desk (again: to someone else)."""
    alert = await _for_work(session, alert_id, expected_version)
    if alert.status in CLOSED:
        raise Problem(409, "Conflict", f"alert is {alert.status}; it cannot be assigned")
    before = alert.assignee
    alert.assignee = body.assignee
    alert.version += 1
    note = f"assigned to {body.assignee}" + (f" (was {before})" if before else "")
    await _history(session, alert, datetime.now(UTC), who, "assigned", alert.status, note)
    return alert


async def history(session: AsyncSession, alert_id: uuid.UUID) -> list[AlertHistory]:
    return await repository.history_of(session, alert_id)


# --- event handlers -----------------------------------------------------------------------
#
# Each takes a batch of fresh events (the consumer claimed them in the inbox) inside the
# batch's transaction: a query each reads the loan facts, the loans' memory and their
# active alerts, the rules and triage decide in Python, and a multi-row statement each
# writes the alerts, their history and their `alert-raised`.

# Events a rule looks at; both are about a loan whose facts come by `loan-registered`.
LoanEvent = RepaymentPosted | VisitCompleted
E = TypeVar("E", RepaymentPosted, VisitCompleted)


async def on_loans_registered(session: AsyncSession, events: Sequence[LoanRegistered]) -> None:
    """Project the loans' facts (an older event than the stored facts changes nothing) and
    apply the events that were parked waiting for them."""
    latest = latest_per_loan(events)
    await repository.project_loan_facts(session, [_facts_row(event) for event in latest])
    released = await repository.unpark_loans(session, [event.loan_id for event in latest])
    await apply_parked(session, released)


async def on_repayments(session: AsyncSession, events: Sequence[RepaymentPosted]) -> None:
    """Raise, escalate or count the repayment alerts the postings call for; a posting
    that brings the loan back to current resolves its repayment alerts."""
    await _apply(session, REPAYMENT_POSTED, events)


async def on_visits(session: AsyncSession, events: Sequence[VisitCompleted]) -> None:
    """Raise, escalate or count an alert for every bad sign the visits found."""
    await _apply(session, VISIT_COMPLETED, events)


async def apply_parked(session: AsyncSession, parked: Sequence[ParkedEvent]) -> None:
    """Apply parked events (taken out of the park in this transaction) whose loans have
    facts now: they were claimed in the inbox when they were parked."""
    if not parked:
        return
    events = [_parked_event(row) for row in parked]
    known = await repository.known_loans(session, {event.loan_id for event in events})
    await _evaluate(session, events, known)


def latest_per_loan(events: Sequence[LoanRegistered]) -> list[LoanRegistered]:
    """Each loan's newest event of the batch (the later one on a tie: a partition's events
    come in their order), so the upsert touches each loan once."""
    latest: dict[str, LoanRegistered] = {}
    for event in events:
        kept = latest.get(event.loan_id)
        if kept is None or event.occurred_at >= kept.occurred_at:
            latest[event.loan_id] = event
    return list(latest.values())


async def _apply(session: AsyncSession, topic: str, events: Sequence[LoanEvent]) -> None:
    """Rules over the events whose loans have facts; the others are parked until theirs
    arrive: topics are not ordered with each other, so a posting may overtake its loan's
    `loan-registered`, and refusing it at once would lose a true alert."""
    known = await repository.known_loans(session, {event.loan_id for event in events})
    waiting = [event for event in events if event.loan_id not in known]
    if waiting:
        log.info("%d %s events parked until their loans' facts arrive", len(waiting), topic)
        await repository.park(session, [_parked_row(topic, event) for event in waiting])
    await _evaluate(session, [e for e in events if e.loan_id in known], known)


async def _evaluate(
    session: AsyncSession, events: Sequence[LoanEvent], known: Mapping[str, rules.KnownLoan]
) -> None:
    """The rules over a batch of events of known loans, against the loans' story and their
    active alerts: remember the events (those remembered before are dropped: applied
    already), read the loans' memory and active alerts (a query each), decide in Python,
    write the alerts, their history and announcements (a multi-row statement each)."""
    if not events:
        return
    postings = [e for e in events if isinstance(e, RepaymentPosted)]
    visits = [e for e in events if isinstance(e, VisitCompleted)]
    postings = _fresh(
        postings,
        await repository.remember(session, RepaymentMemory, _posting_memory(postings)),
    )
    visits = _fresh(visits, await repository.remember(session, VisitMemory, _visit_memory(visits)))
    if not postings and not visits:
        return
    ruleset = rules.current()
    # The consecutive-miss rule reads the latest posting of a few installments back; a few
    # postings per installment (a partial, then the rest) are allowed for. Only the loans
    # with a posting that looks at its story (a miss) have theirs read back: most postings
    # of a month end are paid, and reading ten rows back for each was a third of the
    # worker's CPU.
    lookback = 3 * int(ruleset.rule("missed_consecutive").params["consecutive"])
    storied = {e.loan_id for e in postings if rules.reads_story(e)}
    posting_story = await repository.postings_of(
        session, Counter(e.loan_id for e in postings if e.loan_id in storied), lookback
    )
    visit_story = await repository.visits_of(
        session, {e.loan_id for e in visits}, _story_start(visits, ruleset)
    )
    loans = {e.loan_id for e in postings} | {e.loan_id for e in visits}
    active = await repository.active_alerts(session, loans)
    triage = Triage([_state(row) for row in active], ruleset, datetime.now(UTC))
    decide(triage, postings, visits, posting_story, visit_story, known, ruleset)
    await _write(session, triage)


def _fresh(events: list[E], fresh: set[uuid.UUID]) -> list[E]:
    """The events remembered just now. A batch's ids are distinct, so as many fresh ids as
    events means all of them (the usual case: the inbox let only fresh events through)."""
    if len(fresh) == len(events):
        return events
    return [e for e in events if e.event_id in fresh]


def decide(
    triage: Triage,
    postings: Sequence[RepaymentPosted],
    visits: Sequence[VisitCompleted],
    # The loans' latest remembered postings (repository.postings_of), for the loans of
    # the batch's postings that read their story (`rules.reads_story`).
    posting_story: Sequence[repository.StoryPosting],
    visit_story: Sequence[VisitMemory],
    known: Mapping[str, rules.KnownLoan],
    ruleset: rules.RuleSet,
) -> None:
    """Feed each event's findings to triage in the events' order. Each event sees the
    loan's story up to itself (the memory holds the batch's events too, in batch order).
    Repayment and visit families are apart, so postings go first, then visits."""
    seq_of = {row[0]: row[1] for row in posting_story}
    seq_of |= {memo.event_id: memo.seq or 0 for memo in visit_story}
    paid_story: dict[str, list[tuple[int, rules.PostingMemo]]] = defaultdict(list)
    for row in posting_story:
        paid_story[row[2]].append((row[1], _posting_memo(row)))
    seen_story: dict[str, list[tuple[int, rules.VisitMemo]]] = defaultdict(list)
    for visit_memo in visit_story:
        seen_story[visit_memo.loan_id].append((visit_memo.seq or 0, _visit_memo(visit_memo)))

    for posting in postings:
        earlier: list[rules.PostingMemo] = []
        if rules.reads_story(posting):
            seq = seq_of[posting.event_id]
            earlier = [memo for s, memo in paid_story[posting.loan_id] if s < seq]
        for finding in rules.repayment_findings(posting, earlier, ruleset):
            triage.found(posting.loan_id, posting.event_id, posting.occurred_at, finding)
        # The note is written only for a loan with something to cure (few of them).
        if rules.cures(posting) and triage.has_repayment_alert(posting.loan_id):
            note = (
                f"cured by posting {posting.event_id}: installment {posting.installment_no} "
                "paid, 0 days past due"
            )
            triage.cure(posting.loan_id, posting.event_id, note)
    for visit in visits:
        seq = seq_of[visit.event_id]
        seen = [memo for s, memo in seen_story[visit.loan_id] if s < seq]
        usage = known[visit.loan_id].agreed_usage if visit.loan_id in known else None
        for finding in rules.visit_findings(visit, usage, seen, ruleset):
            triage.found(visit.loan_id, visit.event_id, visit.occurred_at, finding)


async def _write(session: AsyncSession, triage: Triage) -> None:
    """Updates first: a cure closes an alert before the same batch may open its family again."""
    await repository.update_alerts(session, [_alert_row(a) for a in triage.updated])
    await repository.count_alerts(session, [_count_row(a) for a in triage.counted])
    for chunk in _chunks([_alert_row(a) for a in triage.inserted], ALERTS_PER_STATEMENT):
        await repository.add_alerts(session, chunk)
    await repository.add_history(session, [_fields_of(entry) for entry in triage.history])
    await enqueue_many(session, outbox, triage.announced)


def _story_start(visits: Sequence[VisitCompleted], ruleset: rules.RuleSet) -> datetime:
    """How far back the visit rules look from the batch's earliest visit."""
    window = timedelta(days=float(ruleset.rule("unreachable_repeated").params["window_days"]))
    return min(v.ended_at for v in visits) - window if visits else datetime.now(UTC)


def _state(row: repository.AlertRow) -> AlertState:
    (
        alert_id,
        loan_id,
        family,
        rule,
        category,
        severity,
        recommended_action,
        status,
        reason,
        facts,
        rule_version,
        source_event_id,
        created_at,
        occurrences,
        last_seen_at,
        last_raised_at,
        severity_since,
        resolved_at,
        resolved_by,
        resolution_action,
        resolution_note,
    ) = row
    return AlertState(
        alert_id=alert_id,
        loan_id=loan_id,
        family=family,
        rule=rule,
        category=Category(category),
        severity=Severity(severity),
        recommended_action=RecommendedAction(recommended_action),
        status=AlertStatus(status),
        reason=reason,
        facts=facts,
        rule_version=rule_version,
        source_event_id=source_event_id,
        created_at=created_at,
        occurrences=occurrences,
        last_seen_at=last_seen_at,
        last_raised_at=last_raised_at,
        severity_since=severity_since,
        resolved_at=resolved_at,
        resolved_by=resolved_by,
        resolution_action=resolution_action,
        resolution_note=resolution_note,
    )


def _fields_of(record: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, values as they are: `dataclasses.asdict` deep-copies
    every value, and that was a sixth of the worker's CPU."""
    return {field.name: getattr(record, field.name) for field in fields(record)}


def _alert_row(alert: AlertState) -> dict[str, Any]:
    row = _fields_of(alert)
    del row["new"], row["changed"], row["rewritten"]
    return row


def _count_row(alert: AlertState) -> dict[str, Any]:
    return {
        "alert_id": alert.alert_id,
        "occurrences": alert.occurrences,
        "last_seen_at": alert.last_seen_at,
    }


def _posting_memory(postings: Sequence[RepaymentPosted]) -> dict[str, list[Any]]:
    """What the memory keeps of postings, a list per column."""
    return {
        "event_id": [e.event_id for e in postings],
        "loan_id": [e.loan_id for e in postings],
        "installment_no": [e.installment_no for e in postings],
        "status": [str(e.status) for e in postings],
        "days_past_due": [e.days_past_due for e in postings],
        "amount_due": [e.amount_due for e in postings],
        "amount_paid": [e.amount_paid for e in postings],
        "occurred_at": [e.occurred_at for e in postings],
    }


def _visit_memory(visits: Sequence[VisitCompleted]) -> dict[str, list[Any]]:
    """What the memory keeps of visits, a list per column."""
    return {
        "event_id": [e.event_id for e in visits],
        "loan_id": [e.loan_id for e in visits],
        "occasion": [rules.occasion(e) for e in visits],
        "outcome": [str(e.outcome) for e in visits],
        "ended_at": [e.ended_at for e in visits],
    }


def _posting_memo(row: repository.StoryPosting) -> rules.PostingMemo:
    event_id, _, _, installment_no, status, days_past_due, amount_due, amount_paid = row
    return rules.PostingMemo(
        event_id=event_id,
        installment_no=installment_no,
        status=_REPAYMENT_STATUS[status],
        days_past_due=days_past_due,
        amount_due=str(amount_due),
        amount_paid=str(amount_paid),
    )


# A lookup, not an enum call, per row read back.
_REPAYMENT_STATUS = {str(status): status for status in RepaymentStatus}


def _visit_memo(row: VisitMemory) -> rules.VisitMemo:
    return rules.VisitMemo(
        event_id=row.event_id,
        occasion=row.occasion,
        outcome=VisitOutcome(row.outcome),
        ended_at=row.ended_at,
    )


# A consumer batch stays far below the statement limits; a loan whose facts release many
# parked events may not, so inserts of alerts go in chunks.
ALERTS_PER_STATEMENT = 2_000


def _chunks(rows: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _facts_row(event: LoanRegistered) -> dict[str, Any]:
    return {
        "loan_id": event.loan_id,
        "region": event.region,
        "credit_grade": event.credit_grade,
        "agreed_usage": event.agreed_usage,
        "principal": event.principal,
        "term_months": event.term_months,
        "disbursed_on": event.disbursed_on,
        "valuation": event.valuation,
        "ltv": event.ltv,
        "facts_at": event.occurred_at,
        "source_event_id": event.event_id,
        "updated_at": datetime.now(UTC),
    }


def _parked_row(topic: str, event: LoanEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "topic": topic,
        "loan_id": event.loan_id,
        "payload": event.model_dump(mode="json"),
        "parked_at": datetime.now(UTC),
    }


def _parked_event(row: ParkedEvent) -> LoanEvent:
    """The event as it was parked; it was valid then and the model has not changed since
    (a model that changed would refuse it here, and the batch would be retried and split)."""
    model = PARKED_MODELS[row.topic]
    return model.model_validate(row.payload)


PARKED_MODELS: dict[str, type[RepaymentPosted] | type[VisitCompleted]] = {
    REPAYMENT_POSTED: RepaymentPosted,
    VISIT_COMPLETED: VisitCompleted,
}
