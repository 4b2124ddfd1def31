"""Visit planning from events, a batch at a time.

Each handler reads the batch's loans in one query (locked), plans in Python with the pure
policy, and writes with one statement per table: the tasks (`repository.upsert_tasks`), the
visited tasks completed, the loans' standing. Assignment is not done here: a task is written
without an agent and the dispatcher (dispatch.py) gives it one, woken by `notify_dispatch`.

The `plan_*` functions are the pure half (unit-tested without a database); the `on_*`
handlers are what the worker registers per topic.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler import policy, repository
from services.scheduler.policy import LoanPlan
from services.scheduler.repository import Completion, LoanFacts, Standing
from shared.events import AlertRaised, EventEnvelope, RepaymentPosted, VisitCompleted
from shared.kafka import InvalidEvents


@dataclass(frozen=True)
class BatchPlan:
    """What a batch changes: tasks completed, visits planned, loans' standing."""

    plans: list[LoanPlan]
    standings: list[Standing]
    completions: list[Completion]


def unregistered(events: Iterable[EventEnvelope], known: Collection[str]) -> dict[uuid.UUID, str]:
    """The events whose loan the scheduler does not know, with the reason: they go to the
    dead-letter topic, replayable once origination has registered the loan."""
    return {
        e.event_id: f"loan {e.loan_id} is not registered with the scheduler"
        for e in events
        if e.loan_id not in known
    }


def plan_repayments(events: Sequence[RepaymentPosted]) -> BatchPlan:
    """Missed or partial installments plan urgent visits; a loan's last posting in the
    batch (events of a loan come in order) is its standing."""
    plans: list[LoanPlan] = []
    last: dict[str, RepaymentPosted] = {}
    for event in events:
        last[event.loan_id] = event
        plans += [
            LoanPlan(event.loan_id, visit, event.event_id)
            for visit in policy.visits_for_repayment(
                posted_on=event.occurred_at.date(),
                status=event.status,
                days_past_due=event.days_past_due,
                installment_no=event.installment_no,
            )
        ]
    standings = [
        Standing(loan_id, days_past_due=e.days_past_due, last_repayment_status=e.status)
        for loan_id, e in last.items()
    ]
    return BatchPlan(plans, standings, [])


def plan_visits(events: Sequence[VisitCompleted], loans: Mapping[str, LoanFacts]) -> BatchPlan:
    """Each visit completes the task it did and plans the loan's next visit by risk."""
    completions: dict[uuid.UUID, Completion] = {}
    plans: list[LoanPlan] = []
    last_visit: dict[str, date] = {}
    for event in events:
        loan = loans[event.loan_id]
        if event.task_id is not None and event.task_id not in completions:
            # The first visit of a task completes it, as it would one event at a time.
            completions[event.task_id] = Completion(
                event.task_id, event.loan_id, event.visit_id, event.ended_at
            )
        visited_on = event.ended_at.date()
        last_visit[loan.loan_id] = max(visited_on, last_visit.get(loan.loan_id, visited_on))
        visit = policy.next_routine_visit(
            visited_on=visited_on,
            credit_grade=loan.credit_grade,
            days_past_due=loan.days_past_due,
            outcome=event.outcome,
        )
        plans.append(LoanPlan(loan.loan_id, visit, event.event_id))
    standings = [Standing(loan_id, last_visit_on=day) for loan_id, day in last_visit.items()]
    return BatchPlan(plans, standings, list(completions.values()))


def plan_alerts(events: Sequence[AlertRaised]) -> list[LoanPlan]:
    """Alerts that recommend a visit put one on the plan; the others plan nothing."""
    plans: list[LoanPlan] = []
    for event in events:
        visit = policy.visit_for_alert(
            raised_on=event.occurred_at.date(),
            recommended_action=event.recommended_action,
            rule=event.rule,
            severity=event.severity,
        )
        if visit is not None:
            plans.append(LoanPlan(event.loan_id, visit, event.event_id))
    return plans


# --- handlers -----------------------------------------------------------------------------


async def _registered_loans(
    session: AsyncSession, events: Sequence[EventEnvelope]
) -> dict[str, LoanFacts]:
    """The batch's loans, locked; every event of an unknown loan refused at once."""
    loans = await repository.lock_loans(session, {e.loan_id for e in events})
    refused = unregistered(events, loans)
    if refused:
        raise InvalidEvents(refused)
    return loans


async def apply(session: AsyncSession, batch: BatchPlan) -> None:
    """Write a batch's changes: visited tasks completed first (so the next visit opens a new
    task rather than merging into the one just done), plans merged per loan and method,
    then the loans' standing and soonest due date."""
    await repository.complete_tasks(session, batch.completions)
    if await repository.upsert_tasks(session, policy.merge_plans(batch.plans)):
        await repository.notify_dispatch(session)
    touched = {s.loan_id for s in batch.standings}
    extra = sorted({p.loan_id for p in batch.plans} - touched)
    await repository.update_standing(session, [*batch.standings, *map(Standing, extra)])


async def on_repayments(session: AsyncSession, events: Sequence[RepaymentPosted]) -> None:
    """`repayment-posted`: record the repayment standing; missed or partial installments
    get urgent visits."""
    await _registered_loans(session, events)
    await apply(session, plan_repayments(events))


async def on_visits(session: AsyncSession, events: Sequence[VisitCompleted]) -> None:
    """`visit-completed`: complete the visited task and plan the next visit by risk."""
    loans = await _registered_loans(session, events)
    await apply(session, plan_visits(events, loans))


async def on_alerts(session: AsyncSession, events: Sequence[AlertRaised]) -> None:
    """`alert-raised`: alerts that recommend a visit put one on the plan. An alert that
    plans nothing needs no loan here (the alert desk has it)."""
    plans = plan_alerts(events)
    if not plans:
        return
    planning = {p.source_event_id for p in plans}
    await _registered_loans(session, [e for e in events if e.event_id in planning])
    await apply(session, BatchPlan(plans, [], []))


async def plan_first_follow_ups(session: AsyncSession, loans: Mapping[str, date]) -> None:
    """The first follow-up of newly registered loans (loan_id -> disbursed_on), set-based:
    one task insert, one standing update, the dispatcher woken."""
    plans = [
        LoanPlan(loan_id, policy.first_follow_up(disbursed_on), None)
        for loan_id, disbursed_on in loans.items()
    ]
    await apply(session, BatchPlan(plans, [], []))
