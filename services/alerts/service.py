"""Alerts use cases. They run inside the caller's transaction and never commit."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts import repository, rules
from services.alerts.models import Alert, ParkedEvent, ResolutionAction, outbox
from services.alerts.schemas import ResolveIn
from shared.errors import Problem, not_found
from shared.events import (
    REPAYMENT_POSTED,
    VISIT_COMPLETED,
    AlertRaised,
    LoanRegistered,
    RepaymentPosted,
    VisitCompleted,
)
from shared.outbox import enqueue_many
from shared.vocabulary import AlertStatus

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


async def acknowledge(session: AsyncSession, alert_id: uuid.UUID, who: str) -> Alert:
    """Take an open alert into work. Repeating it is harmless: the first ack is kept."""
    alert = await get_alert(session, alert_id, for_update=True)
    if alert.status in CLOSED:
        raise Problem(409, "Conflict", f"alert is {alert.status}; it cannot be acknowledged")
    if alert.status == AlertStatus.OPEN:
        alert.status = AlertStatus.ACKNOWLEDGED
        alert.acknowledged_at = datetime.now(UTC)
        alert.acknowledged_by = who
    return alert


async def resolve(session: AsyncSession, alert_id: uuid.UUID, body: ResolveIn, who: str) -> Alert:
    """Close an open or acknowledged alert with the action taken; `dismiss` marks it a
    false alarm. A closed alert stays as it was closed (409), so the record is not rewritten."""
    alert = await get_alert(session, alert_id, for_update=True)
    if alert.status in CLOSED:
        raise Problem(409, "Conflict", f"alert is already {alert.status}")
    dismissed = body.action == ResolutionAction.DISMISS
    alert.status = AlertStatus.DISMISSED if dismissed else AlertStatus.RESOLVED
    alert.resolved_at = datetime.now(UTC)
    alert.resolved_by = who
    alert.resolution_action = body.action
    alert.resolution_note = body.note
    return alert


# --- event handlers -----------------------------------------------------------------------
#
# Each takes a batch of fresh events (the consumer claimed them in the inbox) inside the
# batch's transaction: one query reads the loan facts, the rules decide in Python, and one
# multi-row insert each writes the alerts and their `alert-raised`.

# Events a rule looks at; both are about a loan whose facts come by `loan-registered`.
LoanEvent = RepaymentPosted | VisitCompleted


async def on_loans_registered(session: AsyncSession, events: Sequence[LoanRegistered]) -> None:
    """Project the loans' facts (an older event than the stored facts changes nothing) and
    apply the events that were parked waiting for them."""
    latest = latest_per_loan(events)
    await repository.project_loan_facts(session, [_facts_row(event) for event in latest])
    released = await repository.unpark_loans(session, [event.loan_id for event in latest])
    await apply_parked(session, released)


async def on_repayments(session: AsyncSession, events: Sequence[RepaymentPosted]) -> None:
    """Raise the arrears alerts that missed or partial installments call for."""
    await _apply(session, REPAYMENT_POSTED, events)


async def on_visits(session: AsyncSession, events: Sequence[VisitCompleted]) -> None:
    """Raise an alert for every bad sign the visits found."""
    await _apply(session, VISIT_COMPLETED, events)


async def apply_parked(session: AsyncSession, parked: Sequence[ParkedEvent]) -> None:
    """Apply parked events (taken out of the park in this transaction) whose loans have
    facts now: they were claimed in the inbox when they were parked."""
    if not parked:
        return
    events = [_parked_event(row) for row in parked]
    known = await repository.known_loans(session, {event.loan_id for event in events})
    await _raise(session, _drafts(events, known))


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
    await _raise(session, _drafts([e for e in events if e.loan_id in known], known))


def _drafts(
    events: Sequence[LoanEvent], known: Mapping[str, rules.KnownLoan]
) -> list[tuple[LoanEvent, rules.AlertDraft]]:
    """What the rules raise for each event, in the events' order."""
    drafts: list[tuple[LoanEvent, rules.AlertDraft]] = []
    for event in events:
        if isinstance(event, RepaymentPosted):
            raised = rules.repayment_alerts(event)
        else:
            raised = rules.visit_alerts(event, known[event.loan_id].agreed_usage)
        drafts += [(event, draft) for draft in raised]
    return drafts


async def _raise(
    session: AsyncSession, drafts: Sequence[tuple[LoanEvent, rules.AlertDraft]]
) -> None:
    """Store the alerts and stage the `alert-raised` of those actually inserted, in the same
    transaction, a multi-row insert each."""
    # The triage list orders by creation time: alerts of one batch are a microsecond apart
    # in the order of their events, so they list in the order they were raised.
    now = datetime.now(UTC)
    rows = [
        {
            # Spelt out: dataclasses.asdict copies deeply and cost a twentieth of the CPU.
            "rule": draft.rule,
            "category": draft.category,
            "severity": draft.severity,
            "reason": draft.reason,
            "recommended_action": draft.recommended_action,
            "alert_id": uuid.uuid4(),
            "loan_id": source.loan_id,
            "source_event_id": source.event_id,
            "status": AlertStatus.OPEN,
            "created_at": now + timedelta(microseconds=i),
        }
        for i, (source, draft) in enumerate(drafts)
    ]
    for chunk in _chunks(rows, ALERTS_PER_STATEMENT):
        inserted = await repository.add_alerts(session, chunk)
        # Not inserted: this event already raised this rule (a replay bypassing the inbox).
        announced = [
            AlertRaised(
                loan_id=row["loan_id"],
                alert_id=row["alert_id"],
                source_event_id=row["source_event_id"],
                rule=row["rule"],
                category=row["category"],
                severity=row["severity"],
                reason=row["reason"],
                recommended_action=row["recommended_action"],
            )
            for row in chunk
            if row["alert_id"] in inserted
        ]
        await enqueue_many(session, outbox, announced)


# PostgreSQL takes at most 32,767 parameters a statement; an alert row has 11. A consumer
# batch stays far below this; a loan whose facts release many parked events may not.
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
