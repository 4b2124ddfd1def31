"""Alerts use cases. They run inside the caller's transaction and never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts import repository, rules
from services.alerts.loans import LoanFacts, LoanLookup
from services.alerts.models import Alert, outbox
from services.alerts.schemas import ResolveIn
from shared.errors import Problem, not_found
from shared.events import AlertRaised, EventEnvelope, RepaymentPosted, VisitCompleted
from shared.kafka import InvalidEvents
from shared.outbox import enqueue

CLOSED = ("resolved", "dismissed")


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
    if alert.status == "open":
        alert.status = "acknowledged"
        alert.acknowledged_at = datetime.now(UTC)
        alert.acknowledged_by = who
    return alert


async def resolve(session: AsyncSession, alert_id: uuid.UUID, body: ResolveIn, who: str) -> Alert:
    """Close an open or acknowledged alert with the action taken; `dismiss` marks it a
    false alarm. A closed alert stays as it was closed (409), so the record is not rewritten."""
    alert = await get_alert(session, alert_id, for_update=True)
    if alert.status in CLOSED:
        raise Problem(409, "Conflict", f"alert is already {alert.status}")
    alert.status = "dismissed" if body.action == "dismiss" else "resolved"
    alert.resolved_at = datetime.now(UTC)
    alert.resolved_by = who
    alert.resolution_action = body.action
    alert.resolution_note = body.note
    return alert


# --- event handlers -----------------------------------------------------------------------


async def on_repayment_posted(
    session: AsyncSession, event: RepaymentPosted, *, loan_of: LoanLookup
) -> None:
    """Raise the arrears alert a missed or partial installment calls for."""
    await _known_loan(event, loan_of)
    await _raise(session, event, rules.repayment_alerts(event))


async def on_visit_completed(
    session: AsyncSession, event: VisitCompleted, *, loan_of: LoanLookup
) -> None:
    """Raise an alert for every bad sign the visit found.

    If the scheduler is down, OwnerUnavailable propagates and the event is retried.
    """
    loan = await _known_loan(event, loan_of)
    await _raise(session, event, rules.visit_alerts(event, loan.agreed_usage))


async def on_repayments(
    session: AsyncSession, events: Sequence[RepaymentPosted], *, loan_of: LoanLookup
) -> None:
    for event in events:
        await on_repayment_posted(session, event, loan_of=loan_of)


async def on_visits(
    session: AsyncSession, events: Sequence[VisitCompleted], *, loan_of: LoanLookup
) -> None:
    for event in events:
        await on_visit_completed(session, event, loan_of=loan_of)


async def _known_loan(event: EventEnvelope, loan_of: LoanLookup) -> LoanFacts:
    """The loan the event is about. An event about a loan nobody registered is refused,
    as the scheduler refuses it, so the two consumers of a topic agree; it waits in the
    dead-letter topic to be replayed once origination has registered the loan."""
    loan = await loan_of(event.loan_id)
    if loan is None:
        reason = f"loan {event.loan_id} is not registered with the scheduler"
        raise InvalidEvents({event.event_id: reason})
    return loan


async def _raise(
    session: AsyncSession, source: EventEnvelope, drafts: list[rules.AlertDraft]
) -> None:
    """Store each alert and stage its `alert-raised` in the same transaction."""
    for draft in drafts:
        fields = asdict(draft)
        alert = Alert(loan_id=source.loan_id, source_event_id=source.event_id, **fields)
        if not await repository.add_alert(session, alert):
            continue  # this event already raised this rule (a replay bypassing the inbox)
        announced = AlertRaised(
            loan_id=alert.loan_id,
            alert_id=alert.alert_id,
            source_event_id=alert.source_event_id,
            **fields,
        )
        await enqueue(session, outbox, announced)
