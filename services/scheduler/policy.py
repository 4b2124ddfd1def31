"""Visit planning policy: pure functions, no I/O (unit-tested without a database).

Frequency follows the borrower's risk tier (credit grade) and repayment standing, as the
lender's procedure asks: high risk is visited more often, overdue loans sooner, and a clean
record less often.
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from shared.vocabulary import (
    SERIOUS_ARREARS_DPD,
    CreditGrade,
    RecommendedAction,
    RepaymentStatus,
    VisitMethod,
    VisitOutcome,
)

# Days between routine visits by credit grade: A/B months apart, D/E every few weeks.
ROUTINE_INTERVAL_DAYS: dict[CreditGrade, int] = {
    CreditGrade.A: 180,
    CreditGrade.B: 120,
    CreditGrade.C: 60,
    CreditGrade.D: 30,
    CreditGrade.E: 14,
}
OVERDUE_INTERVAL_DAYS = 7
URGENT_CALL_DAYS = 2
FIELD_INSPECTION_DAYS = 7
# From the M1 bucket on, the car is inspected in the field.
FIELD_DPD_THRESHOLD = SERIOUS_ARREARS_DPD


@dataclass(frozen=True)
class PlannedVisit:
    method: VisitMethod
    due_on: date
    rule: str
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> dict[str, Any]:
        """What a task shows as `reason`: the rule and the inputs that produced it."""
        return {"rule": self.rule, **self.inputs}


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def first_follow_up(disbursed_on: date) -> PlannedVisit:
    """The first follow-up: a phone visit one calendar month after disbursement."""
    return PlannedVisit(
        method=VisitMethod.PHONE,
        due_on=add_months(disbursed_on, 1),
        rule="first_follow_up",
        inputs={"disbursed_on": disbursed_on.isoformat(), "offset": "1 month"},
    )


def next_routine_visit(
    *, visited_on: date, credit_grade: str, days_past_due: int, outcome: str
) -> PlannedVisit:
    """The next visit after one was completed, by risk tier and repayment standing."""
    interval = ROUTINE_INTERVAL_DAYS[CreditGrade(credit_grade)]
    rule = "routine_by_grade"
    method = VisitMethod.PHONE
    if days_past_due > 0:
        interval, rule = min(interval, OVERDUE_INTERVAL_DAYS), "overdue_follow_up"
    if days_past_due >= FIELD_DPD_THRESHOLD:
        method = VisitMethod.FIELD
    if outcome in (VisitOutcome.BORROWER_UNREACHABLE, VisitOutcome.REFUSED):
        # A borrower who cannot be reached or refuses is seen in person, soon.
        interval, rule = min(interval, FIELD_INSPECTION_DAYS), f"after_{outcome}"
        method = VisitMethod.FIELD
    return PlannedVisit(
        method=method,
        due_on=visited_on + timedelta(days=interval),
        rule=rule,
        inputs={
            "credit_grade": str(credit_grade),
            "days_past_due": days_past_due,
            "last_outcome": str(outcome),
            "last_visit_on": visited_on.isoformat(),
            "interval_days": interval,
        },
    )


def visits_for_repayment(
    *, posted_on: date, status: str, days_past_due: int, installment_no: int
) -> list[PlannedVisit]:
    """A missed or partial installment: an urgent call, and at 30+ DPD a field inspection."""
    if status not in (RepaymentStatus.MISSED, RepaymentStatus.PARTIAL):
        return []
    inputs = {
        "repayment_status": str(status),
        "days_past_due": days_past_due,
        "installment_no": installment_no,
    }
    visits = [
        PlannedVisit(
            VisitMethod.PHONE,
            posted_on + timedelta(days=URGENT_CALL_DAYS),
            f"{status}_payment_call",
            inputs,
        )
    ]
    if days_past_due >= FIELD_DPD_THRESHOLD:
        visits.append(
            PlannedVisit(
                VisitMethod.FIELD,
                posted_on + timedelta(days=FIELD_INSPECTION_DAYS),
                f"dpd_{SERIOUS_ARREARS_DPD}_field_inspection",
                inputs,
            )
        )
    return visits


# What an alert's recommended action asks of the field: the method and within how many days.
VISIT_FOR_ACTION: dict[RecommendedAction, tuple[VisitMethod, int]] = {
    RecommendedAction.PHONE_VISIT: (VisitMethod.PHONE, URGENT_CALL_DAYS),
    RecommendedAction.FIELD_VISIT: (VisitMethod.FIELD, FIELD_INSPECTION_DAYS),
    RecommendedAction.REPOSSESSION_REVIEW: (VisitMethod.FIELD, 2),
}


def visit_for_alert(
    *, raised_on: date, recommended_action: str, rule: str, severity: str
) -> PlannedVisit | None:
    """Alerts that recommend a visit get one; others are for the risk desk alone."""
    if recommended_action not in VISIT_FOR_ACTION:
        return None
    method, days = VISIT_FOR_ACTION[RecommendedAction(recommended_action)]
    return PlannedVisit(
        method,
        raised_on + timedelta(days=days),
        "alert_follow_up",
        {
            "alert_rule": rule,
            "severity": str(severity),
            "recommended_action": str(recommended_action),
        },
    )


# --- merging plans ------------------------------------------------------------------------


@dataclass(frozen=True)
class LoanPlan:
    """A planned visit of one loan, and the event that asked for it (None: registration)."""

    loan_id: str
    visit: PlannedVisit
    source_event_id: uuid.UUID | None


@dataclass(frozen=True)
class TaskPlan:
    """What a batch writes for one (loan, method): the soonest plan, whose reason lists the
    other plans of the batch under `also`. The database merges it with the open task the
    same way (repository.upsert_tasks): a nearer due date wins, a later one is recorded."""

    loan_id: str
    method: VisitMethod
    due_on: date
    reason: dict[str, Any]
    source_event_id: uuid.UUID | None


def merge_plans(plans: Iterable[LoanPlan]) -> list[TaskPlan]:
    """One task per (loan, method), in (loan, method) order (the order rows are locked in).

    The soonest plan wins (the first of equals, as an open task is kept against a plan due
    the same day); every other plan's reason is kept in the winner's `also`, in event order,
    so the agent knows every reason to go.
    """
    grouped: dict[tuple[str, VisitMethod], list[LoanPlan]] = {}
    for plan in plans:
        grouped.setdefault((plan.loan_id, plan.visit.method), []).append(plan)
    merged: list[TaskPlan] = []
    for (loan_id, method), group in sorted(grouped.items()):
        winner = min(group, key=lambda p: p.visit.due_on)
        others = [p.visit.reason for p in group if p is not winner]
        reason = winner.visit.reason | ({"also": others} if others else {})
        merged.append(
            TaskPlan(loan_id, method, winner.visit.due_on, reason, winner.source_event_id)
        )
    return merged


def merge_with_open_task(open_due_on: date | None, planned: PlannedVisit) -> str:
    """What to do with an open task of the same method: 'create', 'keep' or 'advance'.

    One open task per loan and method: a new plan never duplicates it, it can only
    bring it forward. (The batch writer applies the same rule in SQL.)
    """
    if open_due_on is None:
        return "create"
    return "keep" if open_due_on <= planned.due_on else "advance"


# --- dispatch -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentLoad:
    agent_id: str
    open_tasks: int
    due_that_day: int
    daily_capacity: int


def choose_agent(candidates: Sequence[AgentLoad]) -> str | None:
    """Agents with room on the due day first, then fewest open tasks, then the lowest id.

    When every able agent is full that day the least loaded still gets the task: capacity
    orders the choice but is not a hard cap, so no task is left without someone to do it;
    the supervisor sees the day overbooked and reschedules (POST /v1/tasks/{id}/reschedule).
    """
    if not candidates:
        return None
    best = min(
        candidates,
        key=lambda a: (a.due_that_day >= a.daily_capacity, a.open_tasks, a.agent_id),
    )
    return best.agent_id


@dataclass(frozen=True)
class WaitingTask:
    """An open task without an agent, with its loan's region."""

    task_id: uuid.UUID
    region: str
    method: str
    due_on: date


@dataclass(frozen=True)
class RosterAgent:
    """An active agent and its load: open tasks in all, and open tasks per due day (only
    the days the dispatcher asked about need be there)."""

    agent_id: str
    region: str
    methods: frozenset[str]
    daily_capacity: int
    open_tasks: int
    due_by_day: Mapping[date, int]


def assign_tasks(
    waiting: Sequence[WaitingTask], roster: Sequence[RosterAgent]
) -> dict[uuid.UUID, str]:
    """An agent for each waiting task that has an able one (same region, does the method).

    Soonest tasks are served first, each by `choose_agent`, counting the tasks given out so
    far in this pass, so a pass of hundreds of tasks spreads them as one at a time would.
    Tasks with no able agent are left out (they keep waiting).
    """
    open_tasks = {a.agent_id: a.open_tasks for a in roster}
    due: dict[tuple[str, date], int] = {
        (a.agent_id, day): n for a in roster for day, n in a.due_by_day.items()
    }
    able: dict[tuple[str, str], list[RosterAgent]] = {}
    for agent in roster:
        for method in agent.methods:
            able.setdefault((agent.region, method), []).append(agent)
    assigned: dict[uuid.UUID, str] = {}
    for task in sorted(waiting, key=lambda t: (t.due_on, t.task_id)):
        candidates = able.get((task.region, task.method), [])
        chosen = choose_agent(
            [
                AgentLoad(
                    a.agent_id,
                    open_tasks[a.agent_id],
                    due.get((a.agent_id, task.due_on), 0),
                    a.daily_capacity,
                )
                for a in candidates
            ]
        )
        if chosen is None:
            continue
        assigned[task.task_id] = chosen
        open_tasks[chosen] += 1
        due[(chosen, task.due_on)] = due.get((chosen, task.due_on), 0) + 1
    return assigned
