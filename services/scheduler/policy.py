"""Visit planning policy: pure functions of a `PolicyInForce` (visit_policy.py), no I/O
(unit-tested without a database).

Frequency follows the loan's risk tier (credit grade, loan-to-value, remaining term, moved
down by a clean record and up by bad findings and alerts) and its repayment standing, as
the lender's procedure asks. The daily re-plan (replan.py) applies the same rules to the
whole portfolio in SQL; `routine_visits` is their reference, and the tests hold the two
to each other.
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple

from services.scheduler.visit_policy import (
    BadFinding,
    PolicyInForce,
    RiskTierRules,
    Tier,
    VisitAsk,
)
from shared.events import VisitFindings
from shared.vocabulary import (
    EmploymentStatus,
    IncomeChange,
    RecommendedAction,
    RepaymentStatus,
    Severity,
    VehicleCondition,
    VehicleUsage,
    VisitMethod,
    VisitOutcome,
)

# How far events can move a loan from the tier its facts give (in tiers, either way).
MAX_TIER_SHIFT = 2
# The rules the daily re-plan owns: a task of one of these is re-planned with the policy;
# tasks of any other rule (arrears, alerts, findings, collateral) are left as planned.
ROUTINE_RULES = ("first_follow_up", "routine_contact", "field_inspection", "third_party_check")


@dataclass(frozen=True)
class PlannedVisit:
    method: VisitMethod
    due_on: date
    rule: str
    inputs: dict[str, Any] = field(default_factory=dict)
    policy_version: int = 0

    @property
    def reason(self) -> dict[str, Any]:
        """What a task shows as `reason`: the rule, its inputs and the policy version."""
        return {"rule": self.rule, "inputs": self.inputs, "policy_version": self.policy_version}


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def months_between(start: date, end: date) -> int:
    """Whole months from `start` to `end` (PostgreSQL's `age` counts them the same way)."""
    months = (end.year - start.year) * 12 + end.month - start.month
    return months - 1 if end.day < start.day else months


def remaining_term(term_months: int, disbursed_on: date, today: date) -> int:
    return max(term_months - months_between(disbursed_on, today), 0)


_LTV_PLACES = Decimal("0.0001")


def loan_to_value(principal: Decimal, valuation: Decimal) -> Decimal | None:
    """principal / valuation to four places; None for a car valued at nothing."""
    if valuation <= 0:
        return None
    return (principal / valuation).quantize(_LTV_PLACES, rounding=ROUND_HALF_UP)


def tier_points(
    rules: RiskTierRules, *, credit_grade: str, ltv: Decimal | None, remaining_months: int
) -> int:
    """Points of the loan's facts: its grade's, and the highest LTV and term band reached
    (a car valued at nothing reaches every LTV band)."""
    grade = next(points for g, points in rules.grade_points.items() if g == credit_grade)
    ltv_points = max(
        (b.points for b in rules.ltv_bands if ltv is None or ltv >= b.from_ratio), default=0
    )
    term_points = max(
        (b.points for b in rules.remaining_term_bands if remaining_months >= b.from_months),
        default=0,
    )
    return grade + ltv_points + term_points


def risk_tier(
    rules: RiskTierRules,
    *,
    credit_grade: str,
    ltv: Decimal | None,
    remaining_months: int,
    shift: int = 0,
) -> Tier:
    """The tier the facts give, moved by `shift` (clean record down, bad signs up)."""
    points = tier_points(
        rules, credit_grade=credit_grade, ltv=ltv, remaining_months=remaining_months
    )
    base = (
        Tier.HIGH
        if points >= rules.high_from
        else Tier.MEDIUM
        if points >= rules.medium_from
        else Tier.LOW
    )
    return Tier(min(max(base + shift, Tier.LOW), Tier.HIGH))


def shifted(shift: int, by: int) -> int:
    return min(max(shift + by, -MAX_TIER_SHIFT), MAX_TIER_SHIFT)


def first_follow_up(p: PolicyInForce, disbursed_on: date) -> PlannedVisit:
    """The first follow-up: by phone (the policy's method) a month after disbursement."""
    rule = p.rules.first_follow_up
    return PlannedVisit(
        method=VisitMethod(rule.method),
        due_on=add_months(disbursed_on, rule.after_months),
        rule="first_follow_up",
        inputs={"disbursed_on": disbursed_on.isoformat(), "after_months": rule.after_months},
        policy_version=p.version,
    )


def next_routine_visit(
    p: PolicyInForce, *, visited_on: date, tier: Tier, days_past_due: int, outcome: str
) -> PlannedVisit:
    """The next contact after a visit was completed, by risk tier and repayment standing."""
    arrears = p.rules.arrears
    months = p.rules.tiers.of(tier).contact_every_months
    due_on, rule, method = add_months(visited_on, months), "routine_contact", VisitMethod.PHONE
    if days_past_due > 0:
        due_on = min(due_on, visited_on + timedelta(days=arrears.overdue_contact_every_days))
        rule = "overdue_follow_up"
    if days_past_due >= arrears.field_from_dpd:
        method = VisitMethod.FIELD
    if outcome in (VisitOutcome.BORROWER_UNREACHABLE, VisitOutcome.REFUSED):
        # A borrower who cannot be reached or refuses is seen in person, soon.
        due_on = min(due_on, visited_on + timedelta(days=arrears.unreachable_field_within_days))
        rule, method = f"after_{outcome}", VisitMethod.FIELD
    return PlannedVisit(
        method=method,
        due_on=due_on,
        rule=rule,
        inputs={
            "risk_tier": tier.label,
            "days_past_due": days_past_due,
            "last_outcome": str(outcome),
            "last_visit_on": visited_on.isoformat(),
        },
        policy_version=p.version,
    )


def routine_visits(
    p: PolicyInForce,
    *,
    tier: Tier,
    disbursed_on: date,
    last_visit_on: date | None,
    last_field_on: date | None,
    last_third_party_on: date | None,
) -> list[PlannedVisit]:
    """A loan's routine plan, by method: a contact by its tier's cadence after the last
    visit (the first follow-up before any), a field inspection by the tier's cadence after
    the last one (or disbursement), a third-party check likewise. The re-plan's SQL
    (replan.py) computes exactly this for the whole portfolio."""
    cadence = p.rules.tiers.of(tier)
    inputs = {"risk_tier": tier.label}
    if last_visit_on is None:
        contact = first_follow_up(p, disbursed_on)
    else:
        contact = PlannedVisit(
            VisitMethod.PHONE,
            add_months(last_visit_on, cadence.contact_every_months),
            "routine_contact",
            inputs | {"last_visit_on": last_visit_on.isoformat()},
            p.version,
        )
    field_from = last_field_on or disbursed_on
    checked_from = last_third_party_on or disbursed_on
    return [
        contact,
        PlannedVisit(
            VisitMethod.FIELD,
            add_months(field_from, cadence.field_every_months),
            "field_inspection",
            inputs | {"since": field_from.isoformat()},
            p.version,
        ),
        PlannedVisit(
            VisitMethod.THIRD_PARTY,
            add_months(checked_from, cadence.third_party_every_months),
            "third_party_check",
            inputs
            | {"since": checked_from.isoformat(), "checks": list(p.rules.third_party_checks)},
            p.version,
        ),
    ]


def next_third_party_check(p: PolicyInForce, *, checked_on: date, tier: Tier) -> PlannedVisit:
    """After a partner's report: the next check by the tier's cadence."""
    cadence = p.rules.tiers.of(tier)
    return PlannedVisit(
        VisitMethod.THIRD_PARTY,
        add_months(checked_on, cadence.third_party_every_months),
        "third_party_check",
        {
            "risk_tier": tier.label,
            "since": checked_on.isoformat(),
            "checks": list(p.rules.third_party_checks),
        },
        p.version,
    )


def visits_for_repayment(
    p: PolicyInForce, *, posted_on: date, status: str, days_past_due: int, installment_no: int
) -> list[PlannedVisit]:
    """A missed or partial installment: an urgent call, and past the policy's DPD a field
    inspection."""
    if status not in (RepaymentStatus.MISSED, RepaymentStatus.PARTIAL):
        return []
    arrears = p.rules.arrears
    inputs = {
        "repayment_status": str(status),
        "days_past_due": days_past_due,
        "installment_no": installment_no,
    }
    visits = [
        PlannedVisit(
            VisitMethod.PHONE,
            posted_on + timedelta(days=arrears.call_within_days),
            f"{status}_payment_call",
            inputs,
            p.version,
        )
    ]
    if days_past_due >= arrears.field_from_dpd:
        visits.append(
            PlannedVisit(
                VisitMethod.FIELD,
                posted_on + timedelta(days=arrears.field_within_days),
                f"dpd_{arrears.field_from_dpd}_field_inspection",
                inputs,
                p.version,
            )
        )
    return visits


class Record(NamedTuple):
    """A loan's record towards a tier move: on-time installments in a row, whether its last
    visit was clean, and how far events have moved its tier. (A named tuple: each posting
    makes one.)"""

    on_time_streak: int
    last_visit_clean: bool | None
    tier_shift: int


def after_posting(p: PolicyInForce, record: Record, *, status: str, days_past_due: int) -> Record:
    """A posting's effect on the record: a paid, current installment extends the streak, any
    other resets it; a long enough streak after a clean visit moves the loan a tier down
    (and starts counting again)."""
    if status != RepaymentStatus.PAID or days_past_due > 0:
        return Record(0, record.last_visit_clean, record.tier_shift)
    streak = record.on_time_streak + 1
    clean = p.rules.clean_record
    if streak >= clean.on_time_installments and record.last_visit_clean:
        return Record(0, record.last_visit_clean, shifted(record.tier_shift, -clean.tiers_down))
    return Record(streak, record.last_visit_clean, record.tier_shift)


def bad_findings(p: PolicyInForce, findings: VisitFindings) -> list[BadFinding]:
    """The policy's bad findings among a visit's."""
    seen = {
        BadFinding.VEHICLE_MISSING: findings.vehicle_condition == VehicleCondition.MISSING,
        BadFinding.VEHICLE_DAMAGED: findings.vehicle_condition == VehicleCondition.DAMAGED,
        BadFinding.VEHICLE_LENT_OUT: findings.vehicle_usage == VehicleUsage.LENT_OUT,
        BadFinding.UNEMPLOYED: findings.employment_status == EmploymentStatus.UNEMPLOYED,
        BadFinding.INCOME_DECREASED: findings.income_change == IncomeChange.DECREASED,
        BadFinding.ENCUMBRANCE_DETECTED: bool(findings.encumbrance_detected),
        BadFinding.DOCUMENTS_NOT_INTACT: findings.collateral_documents_intact is False,
        BadFinding.REPAYMENT_DIFFICULTY: bool(findings.repayment_difficulty),
    }
    return [f for f in p.rules.bad_findings.findings if seen[f]]


def _asked(
    p: PolicyInForce, ask: VisitAsk, on: date, rule: str, inputs: dict[str, Any]
) -> PlannedVisit:
    return PlannedVisit(
        VisitMethod(ask.method), on + timedelta(days=ask.within_days), rule, inputs, p.version
    )


def visit_for_findings(
    p: PolicyInForce, *, visited_on: date, found: Sequence[BadFinding]
) -> PlannedVisit | None:
    """Bad findings ask for the policy's visit (a field inspection within a week)."""
    if not found:
        return None
    return _asked(
        p, p.rules.bad_findings.visit, visited_on, "bad_findings", {"findings": list(found)}
    )


def alert_tiers_up(p: PolicyInForce, severity: str) -> int:
    """How many tiers an alert of `severity` moves its loan up."""
    order = list(Severity)
    alerts = p.rules.alerts
    return (
        alerts.tiers_up
        if order.index(Severity(severity)) >= order.index(alerts.tier_up_from_severity)
        else 0
    )


def visit_for_alert(
    p: PolicyInForce,
    *,
    raised_on: date,
    recommended_action: str,
    rule: str,
    severity: str,
    alert_id: uuid.UUID | None = None,
    escalated_from: str | None = None,
) -> PlannedVisit | None:
    """Alerts whose recommended action the policy maps to a visit get one; the others are
    for the risk desk alone. The visit names the alert, and the rule it escalated from when
    the desk re-published it worse."""
    ask = p.rules.alerts.visits.get(RecommendedAction(recommended_action))
    if ask is None:
        return None
    inputs: dict[str, Any] = {
        "alert_rule": rule,
        "severity": str(severity),
        "recommended_action": str(recommended_action),
    }
    if alert_id is not None:
        inputs["alert_id"] = str(alert_id)
    if escalated_from is not None:
        inputs["escalated_from"] = escalated_from
    return _asked(p, ask, raised_on, "alert_follow_up", inputs)


def collateral_review(p: PolicyInForce, *, valued_on: date, ltv: Decimal | None) -> PlannedVisit:
    """A valuation that took the LTV to or over the policy's limit: a collateral review."""
    return _asked(
        p,
        p.rules.collateral.review,
        valued_on,
        "collateral_review",
        {"ltv": None if ltv is None else str(ltv), "ltv_limit": str(p.rules.collateral.ltv_limit)},
    )


def over_ltv_limit(p: PolicyInForce, ltv: Decimal | None) -> bool:
    return ltv is None or ltv >= p.rules.collateral.ltv_limit


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
    # Whether the agent has worked this loan before: a borrower keeps its agent.
    knows_borrower: bool = False


def choose_agent(candidates: Sequence[AgentLoad]) -> str | None:
    """Agents with room on the due day first, then the borrower's own agent, then fewest
    open tasks, then the lowest id.

    When every able agent is full that day the least loaded still gets the task: capacity
    orders the choice but is not a hard cap, so no task is left without someone to do it;
    the supervisor sees the day overbooked and reschedules (POST /v1/tasks/{id}/reschedule).
    """
    if not candidates:
        return None
    best = min(
        candidates,
        key=lambda a: (
            a.due_that_day >= a.daily_capacity,
            not a.knows_borrower,
            a.open_tasks,
            a.agent_id,
        ),
    )
    return best.agent_id


@dataclass(frozen=True)
class WaitingTask:
    """An open task without an agent, with its loan's region, and the agent who last had a
    task of the loan (None: nobody yet)."""

    task_id: uuid.UUID
    region: str
    method: str
    due_on: date
    previous_agent: str | None = None


@dataclass(frozen=True)
class RosterAgent:
    """An active agent and its load: open tasks in all, and open tasks per due day (only
    the days the dispatcher asked about need be there); the ISO weekdays it works and its
    absences (first and last day)."""

    agent_id: str
    region: str
    methods: frozenset[str]
    daily_capacity: int
    open_tasks: int
    due_by_day: Mapping[date, int]
    working_days: frozenset[int] = frozenset(range(1, 8))
    absences: tuple[tuple[date, date], ...] = ()

    def works_on(self, day: date) -> bool:
        return day.isoweekday() in self.working_days and not any(
            first <= day <= last for first, last in self.absences
        )


# How far dispatch looks for a day the agent works when nobody able works the due day.
SEARCH_DAYS = 31


def available_day(agent: RosterAgent, due_on: date, today: date) -> date | None:
    """The day `agent` can do a task due `due_on`: that day if it works then, else the
    latest working day before it from today on (sooner is never worse for a visit), else
    the first one after it (and not in the past: an overdue task is done from today)."""
    if agent.works_on(due_on):
        return due_on
    day = due_on - timedelta(days=1)
    while day >= max(today, due_on - timedelta(days=SEARCH_DAYS)):
        if agent.works_on(day):
            return day
        day -= timedelta(days=1)
    start = max(due_on + timedelta(days=1), today)
    for ahead in range(SEARCH_DAYS):
        day = start + timedelta(days=ahead)
        if agent.works_on(day):
            return day
    return None


@dataclass(frozen=True)
class Assignment:
    agent_id: str
    due_on: date


def assign_tasks(
    waiting: Sequence[WaitingTask], roster: Sequence[RosterAgent], today: date | None = None
) -> dict[uuid.UUID, Assignment]:
    """An agent for each waiting task that has an able one (same region, does the method),
    on a day it works.

    Soonest tasks are served first. Agents who work the due day are chosen among by
    `choose_agent`; when none does, the task moves to the day nearest its due date that an
    able agent works (earlier first). Loads count the tasks given out so far in this pass,
    so a pass of hundreds of tasks spreads them as one at a time would. Tasks with no able
    agent are left out (they keep waiting).
    """
    today = today or min((t.due_on for t in waiting), default=date.min)
    open_tasks = {a.agent_id: a.open_tasks for a in roster}
    capacity = {a.agent_id: a.daily_capacity for a in roster}
    due: dict[tuple[str, date], int] = {
        (a.agent_id, day): n for a in roster for day, n in a.due_by_day.items()
    }
    able: dict[tuple[str, str], list[RosterAgent]] = {}
    for agent in roster:
        for method in agent.methods:
            able.setdefault((agent.region, method), []).append(agent)
    assigned: dict[uuid.UUID, Assignment] = {}
    for task in sorted(waiting, key=lambda t: (t.due_on, t.task_id)):
        days = {
            a.agent_id: available_day(a, task.due_on, today)
            for a in able.get((task.region, task.method), [])
        }
        reachable = {agent_id: day for agent_id, day in days.items() if day is not None}
        if not reachable:
            continue
        # The day nearest the due date any able agent works, an earlier one on a tie.
        day = min(reachable.values(), key=lambda d: (abs((d - task.due_on).days), d))
        chosen = choose_agent(
            [
                AgentLoad(
                    agent_id,
                    open_tasks[agent_id],
                    due.get((agent_id, day), 0),
                    capacity[agent_id],
                    agent_id == task.previous_agent,
                )
                for agent_id, works in reachable.items()
                if works == day
            ]
        )
        if chosen is None:  # pragma: no cover - reachable is never empty here
            continue
        assigned[task.task_id] = Assignment(chosen, day)
        open_tasks[chosen] += 1
        due[(chosen, day)] = due.get((chosen, day), 0) + 1
    return assigned
