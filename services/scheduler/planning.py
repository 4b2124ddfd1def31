"""Visit planning from events, a batch at a time.

Each handler reads the batch's loans in one query (locked) and the policy in force in
another, plans in Python with the pure policy, and writes with one statement per table: the
tasks (`repository.upsert_tasks`), the visited tasks completed, the loans' standing (with
what moves their tier: on-time streak, last visit clean, tier shift), then their tiers
recomputed in SQL (`replan.recompute_tiers`). Assignment is not done here: a task is
written without an agent and the dispatcher (dispatch.py) gives it one, woken by
`notify_dispatch`.

The `plan_*` functions are the pure half (unit-tested without a database); the `on_*`
handlers are what the worker registers per topic.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler import policies, policy, replan, repository
from services.scheduler.policy import LoanPlan, Record
from services.scheduler.repository import AlertSeen, Completion, LoanFacts, Standing
from services.scheduler.visit_policy import PolicyInForce, Tier
from shared.events import (
    AlertRaised,
    EventEnvelope,
    RepaymentPlanApproved,
    RepaymentPosted,
    VisitCompleted,
)
from shared.kafka import InvalidEvents
from shared.vocabulary import VisitMethod, VisitOutcome


@dataclass(frozen=True)
class BatchPlan:
    """What a batch changes: tasks completed, visits planned, loans' standing, and the
    latest state of the alerts it acted on."""

    plans: list[LoanPlan]
    standings: list[Standing]
    completions: list[Completion]
    alerts: list[AlertSeen] = field(default_factory=list)


def unregistered(events: Iterable[EventEnvelope], known: Collection[str]) -> dict[uuid.UUID, str]:
    """The events whose loan the scheduler does not know, with the reason: they go to the
    dead-letter topic, replayable once origination has registered the loan."""
    return {
        e.event_id: f"loan {e.loan_id} is not registered with the scheduler"
        for e in events
        if e.loan_id not in known
    }


def tier_of(p: PolicyInForce, loan: LoanFacts, on: date, shift: int) -> Tier:
    """The loan's tier on `on` with its events' `shift` (policy.risk_tier)."""
    return policy.risk_tier(
        p.rules.risk_tier,
        credit_grade=loan.credit_grade,
        ltv=policy.loan_to_value(loan.principal, loan.valuation),
        remaining_months=policy.remaining_term(loan.term_months, loan.disbursed_on, on),
        shift=shift,
    )


def _record(loan: LoanFacts) -> Record:
    return Record(loan.on_time_streak, loan.last_visit_clean, loan.tier_shift)


def _standing(loan_id: str, record: Record, **fields: object) -> Standing:
    return Standing(
        loan_id,
        on_time_streak=record.on_time_streak,
        last_visit_clean=record.last_visit_clean,
        tier_shift=record.tier_shift,
        **fields,  # type: ignore[arg-type]
    )


def plan_repayments(
    p: PolicyInForce, events: Sequence[RepaymentPosted], loans: Mapping[str, LoanFacts]
) -> BatchPlan:
    """Missed or partial installments plan urgent visits; every posting moves the loan's
    on-time streak (a clean record moves it a tier down); a loan's last posting in the
    batch (events of a loan come in order) is its standing."""
    plans: list[LoanPlan] = []
    last: dict[str, RepaymentPosted] = {}
    records = {loan_id: _record(loan) for loan_id, loan in loans.items()}
    for event in events:
        last[event.loan_id] = event
        records[event.loan_id] = policy.after_posting(
            p, records[event.loan_id], status=event.status, days_past_due=event.days_past_due
        )
        plans += [
            LoanPlan(event.loan_id, visit, event.event_id)
            for visit in policy.visits_for_repayment(
                p,
                posted_on=event.occurred_at.date(),
                status=event.status,
                days_past_due=event.days_past_due,
                installment_no=event.installment_no,
            )
        ]
    standings = [
        _standing(
            loan_id,
            records[loan_id],
            days_past_due=e.days_past_due,
            last_repayment_status=e.status,
        )
        for loan_id, e in last.items()
    ]
    return BatchPlan(plans, standings, [])


def plan_visits(
    p: PolicyInForce, events: Sequence[VisitCompleted], loans: Mapping[str, LoanFacts]
) -> BatchPlan:
    """Each visit completes the task it did (a partner's report, the loan's open third-party
    check), records whether it was clean, and plans the loan's next visit by its tier; bad
    findings move the loan a tier up and ask for their own visit."""
    completions: dict[uuid.UUID | tuple[str, str], Completion] = {}
    plans: list[LoanPlan] = []
    records = {loan_id: _record(loan) for loan_id, loan in loans.items()}
    visited: dict[str, dict[str, date]] = {}
    for event in events:
        loan = loans[event.loan_id]
        third_party = event.method == VisitMethod.THIRD_PARTY
        key = event.task_id or ((event.loan_id, "third_party") if third_party else None)
        if key is not None and key not in completions:
            # The first visit of a task completes it, as it would one event at a time.
            completions[key] = Completion(
                event.task_id, event.loan_id, event.visit_id, event.ended_at, str(event.method)
            )
        visited_on = event.ended_at.date()
        found = policy.bad_findings(p, event.findings)
        record = records[loan.loan_id]
        if found:
            up = p.rules.bad_findings.tiers_up
            record = Record(0, False, policy.shifted(record.tier_shift, up))
        elif not third_party:
            record = record._replace(last_visit_clean=event.outcome == VisitOutcome.COMPLETED)
        records[loan.loan_id] = record
        tier = tier_of(p, loan, visited_on, record.tier_shift)
        dates = visited.setdefault(loan.loan_id, {})
        column = {
            VisitMethod.PHONE: "last_visit_on",
            VisitMethod.FIELD: "last_field_on",
            VisitMethod.THIRD_PARTY: "last_third_party_on",
        }[VisitMethod(event.method)]
        for name in (column, "last_visit_on") if not third_party else (column,):
            dates[name] = max(visited_on, dates.get(name, visited_on))
        if third_party:
            visit = policy.next_third_party_check(p, checked_on=visited_on, tier=tier)
        else:
            visit = policy.next_routine_visit(
                p,
                visited_on=visited_on,
                tier=tier,
                days_past_due=loan.days_past_due,
                outcome=event.outcome,
            )
        plans.append(LoanPlan(loan.loan_id, visit, event.event_id))
        asked = policy.visit_for_findings(p, visited_on=visited_on, found=found)
        if asked is not None:
            plans.append(LoanPlan(loan.loan_id, asked, event.event_id))
    standings = [
        _standing(loan_id, records[loan_id], **visited.get(loan_id, {}))
        for loan_id in sorted({e.loan_id for e in events})
    ]
    return BatchPlan(plans, standings, list(completions.values()))


def alert_moves(p: PolicyInForce, events: Sequence[AlertRaised]) -> list[AlertRaised]:
    """The alerts that change a loan: they plan a visit or move its tier up."""
    return [
        e
        for e in events
        if e.recommended_action in p.rules.alerts.visits or policy.alert_tiers_up(p, e.severity)
    ]


def plan_alerts(
    p: PolicyInForce,
    events: Sequence[AlertRaised],
    loans: Mapping[str, LoanFacts],
    seen: Mapping[uuid.UUID, AlertSeen],
) -> BatchPlan:
    """Alerts that recommend a visit put it on the plan; serious ones move the loan a tier
    up (and start its on-time streak again).

    The desk publishes an alert again under the same `alert_id` when it escalates (a worse
    rule, severity or action) and when it repeats after its suppression window: each such
    publication is a new plan (the visit it asks for now), but the tier moves once per
    alert, by what the alert's new severity asks beyond what its last one got (`seen`: the
    latest publication acted on). A publication no newer than that one is a replay and
    changes nothing.
    """
    plans: list[LoanPlan] = []
    records = {loan_id: _record(loan) for loan_id, loan in loans.items()}
    latest = dict(seen)
    moved: set[str] = set()
    for event in events:
        before = latest.get(event.alert_id)
        if before is not None and event.occurred_at <= before.occurred_at:
            continue
        now = AlertSeen(
            event.alert_id,
            event.loan_id,
            event.rule,
            event.severity,
            event.recommended_action,
            event.occurred_at,
        )
        latest[event.alert_id] = now
        escalated = before is not None and before.state != now.state
        visit = policy.visit_for_alert(
            p,
            raised_on=event.occurred_at.date(),
            recommended_action=event.recommended_action,
            rule=event.rule,
            severity=event.severity,
            alert_id=event.alert_id,
            escalated_from=before.rule if escalated and before is not None else None,
        )
        if visit is not None:
            plans.append(LoanPlan(event.loan_id, visit, event.event_id))
        up = policy.alert_tiers_up(p, event.severity) - (
            policy.alert_tiers_up(p, before.severity) if before is not None else 0
        )
        if up > 0:
            record = records[event.loan_id]
            records[event.loan_id] = Record(
                0, record.last_visit_clean, policy.shifted(record.tier_shift, up)
            )
            moved.add(event.loan_id)
    standings = [_standing(loan_id, records[loan_id]) for loan_id in sorted(moved)]
    acted = [state for alert_id, state in latest.items() if seen.get(alert_id) is not state]
    return BatchPlan(plans, standings, [], acted)


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


async def apply(
    session: AsyncSession,
    p: PolicyInForce,
    batch: BatchPlan,
    before: Mapping[str, LoanFacts] | None = None,
) -> None:
    """Write a batch's changes: visited tasks completed first (so the next visit opens a new
    task rather than merging into the one just done), plans merged per loan and method,
    then the loans' standing and soonest due date, then their tiers.

    `before`: the loans as the batch read them. Given, only loans whose tier shift the
    batch moved get their tier recomputed: a month-end batch of on-time postings moves
    none, and recomputing a thousand tiers was a statement's worth of work per batch.
    Without it (a valuation changes a tier's input itself) every loan touched is."""
    await repository.complete_tasks(session, batch.completions)
    await repository.save_alert_states(session, batch.alerts)
    if await repository.upsert_tasks(session, policy.merge_plans(batch.plans)):
        await repository.notify_dispatch(session)
    touched = {s.loan_id for s in batch.standings}
    planned = {p.loan_id for p in batch.plans}
    extra = sorted(planned - touched)
    await repository.update_standing(
        session,
        [*batch.standings, *map(Standing, extra)],
        tasks_moved=planned | {c.loan_id for c in batch.completions},
    )
    # Only a record's shift moves a tier here; the facts' own inputs move it elsewhere.
    if before is not None:
        touched = {
            s.loan_id
            for s in batch.standings
            if s.tier_shift is not None and s.tier_shift != before[s.loan_id].tier_shift
        }
    await replan.recompute_tiers(session, p, datetime.now(UTC).date(), touched)


async def on_repayments(session: AsyncSession, events: Sequence[RepaymentPosted]) -> None:
    """`repayment-posted`: record the repayment standing; missed or partial installments
    get urgent visits."""
    loans = await _registered_loans(session, events)
    p = await policies.current_policy(session)
    await apply(session, p, plan_repayments(p, events, loans), loans)


async def on_visits(session: AsyncSession, events: Sequence[VisitCompleted]) -> None:
    """`visit-completed`: complete the visited task and plan the next visit by risk."""
    loans = await _registered_loans(session, events)
    p = await policies.current_policy(session)
    await apply(session, p, plan_visits(p, events, loans), loans)


async def on_alerts(session: AsyncSession, events: Sequence[AlertRaised]) -> None:
    """`alert-raised`: alerts that recommend a visit put one on the plan, serious ones move
    the loan's tier up, once per alert however often the desk re-publishes it (three
    statements more than the other handlers: the alerts' last states read and written).
    An alert that changes nothing needs no loan here (the alert desk has it)."""
    p = await policies.current_policy(session)
    moving = alert_moves(p, events)
    if not moving:
        return
    loans = await _registered_loans(session, moving)
    seen = await repository.alert_states(session, {e.alert_id for e in moving})
    await apply(session, p, plan_alerts(p, moving, loans, seen), loans)


async def on_repayment_plans(
    session: AsyncSession, events: Sequence[RepaymentPlanApproved]
) -> None:
    """`repayment-plan-approved`: keep the plan, and open the call before its next
    installment (`replan.plan_repayment_calls`; the daily re-plan opens the ones after it,
    one at a time). A plan kept before changes nothing: redelivery is harmless."""
    loans = await _registered_loans(session, events)
    p = await policies.current_policy(session)
    await repository.save_repayment_plans(session, events)
    scope = replan.Scope(loan_ids=tuple(sorted(loans)))
    called = await replan.plan_repayment_calls(session, p, datetime.now(UTC).date(), scope)
    if called:
        await repository.refresh_next_due(session, called)
        await repository.notify_dispatch(session)
