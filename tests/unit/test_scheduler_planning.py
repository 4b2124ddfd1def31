"""Batch planning and dispatch assignment: the pure halves, no database."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from services.scheduler import planning, policy
from services.scheduler.policy import (
    Assignment,
    LoanPlan,
    PlannedVisit,
    RosterAgent,
    WaitingTask,
)
from services.scheduler.repository import LoanFacts
from services.scheduler.visit_policy import PolicyInForce, default_policy
from shared.events import AlertRaised, RepaymentPosted, VisitCompleted
from shared.vocabulary import VisitMethod

POSTED = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
PHONE, FIELD = VisitMethod.PHONE, VisitMethod.FIELD
P = PolicyInForce(7, default_policy())


def facts(loan_id: str, grade: str = "C", dpd: int = 0, **kwargs: Any) -> LoanFacts:
    """A loan of 80,000 on a car worth 100,000 (LTV 0.8), 36 months from 2026-01-01."""
    values: dict[str, Any] = {
        "principal": Decimal("80000.00"),
        "valuation": Decimal("100000.00"),
        "term_months": 36,
        "disbursed_on": date(2026, 1, 1),
        "tier_shift": 0,
        "on_time_streak": 0,
        "last_visit_clean": None,
    } | kwargs
    return LoanFacts(loan_id, grade, dpd, **values)


def posting(loan_id: str, status: str, dpd: int, when: datetime = POSTED) -> RepaymentPosted:
    return RepaymentPosted.model_validate(
        {
            "loan_id": loan_id,
            "occurred_at": when,
            "installment_no": 3,
            "due_date": (when - timedelta(days=dpd)).date(),
            "amount_due": "2800.00",
            "amount_paid": "0.00",
            "status": status,
            "days_past_due": dpd,
            "outstanding_principal": "70000.00",
        }
    )


def visit(loan_id: str, outcome: str = "completed", task_id: uuid.UUID | None = None) -> Any:
    return VisitCompleted.model_validate(
        {
            "loan_id": loan_id,
            "occurred_at": POSTED,
            "visit_id": uuid.uuid4(),
            "task_id": task_id,
            "agent_id": "AG-1",
            "method": "phone",
            "outcome": outcome,
            "started_at": POSTED - timedelta(minutes=10),
            "ended_at": POSTED,
            "findings": {},
        }
    )


def plan(loan_id: str, method: VisitMethod, due: date, rule: str) -> LoanPlan:
    return LoanPlan(loan_id, PlannedVisit(method, due, rule), uuid.uuid4())


# --- merging ------------------------------------------------------------------------------


def test_plans_of_a_loan_and_method_merge_into_the_soonest_which_lists_the_others() -> None:
    late = plan("L-1", PHONE, date(2026, 6, 20), "late")
    soon = plan("L-1", PHONE, date(2026, 6, 3), "soon")
    later = plan("L-1", PHONE, date(2026, 7, 1), "later")
    field = plan("L-1", FIELD, date(2026, 6, 8), "field")
    other = plan("L-0", PHONE, date(2026, 6, 9), "other loan")

    merged = policy.merge_plans([late, soon, field, later, other])

    # One row per (loan, method), in lock order.
    assert [(m.loan_id, m.method) for m in merged] == [
        ("L-0", PHONE),
        ("L-1", FIELD),
        ("L-1", PHONE),
    ]
    phone = merged[2]
    assert (phone.due_on, phone.reason["rule"], phone.source_event_id) == (
        date(2026, 6, 3),
        "soon",
        soon.source_event_id,
    )
    assert [r["rule"] for r in phone.reason["also"]] == ["late", "later"]  # in event order
    assert "also" not in merged[0].reason and "also" not in merged[1].reason


def test_of_two_plans_due_the_same_day_the_first_is_kept() -> None:
    first = plan("L-1", PHONE, date(2026, 6, 3), "first")
    second = plan("L-1", PHONE, date(2026, 6, 3), "second")
    [merged] = policy.merge_plans([first, second])
    assert merged.reason["rule"] == "first"
    assert merged.reason["also"] == [{"rule": "second", "inputs": {}, "policy_version": 0}]


# --- batches ------------------------------------------------------------------------------


def test_a_loans_last_posting_in_the_batch_is_its_standing_and_every_miss_plans() -> None:
    events = [
        posting("L-1", "missed", 35),
        posting("L-2", "missed", 5),
        posting("L-1", "paid", 0, POSTED + timedelta(days=1)),
    ]
    batch = planning.plan_repayments(P, events, {"L-1": facts("L-1"), "L-2": facts("L-2")})
    standing = {s.loan_id: s for s in batch.standings}
    assert (standing["L-1"].days_past_due, standing["L-1"].last_repayment_status) == (0, "paid")
    assert (standing["L-2"].days_past_due, standing["L-2"].last_repayment_status) == (5, "missed")
    # The paid posting does not undo what the miss planned: the visits stand.
    planned = sorted((p.loan_id, p.visit.method, p.visit.due_on) for p in batch.plans)
    assert planned == [
        ("L-1", FIELD, date(2026, 6, 8)),
        ("L-1", PHONE, date(2026, 6, 3)),
        ("L-2", PHONE, date(2026, 6, 3)),
    ]
    assert {p.source_event_id for p in batch.plans if p.loan_id == "L-1"} == {events[0].event_id}


def test_two_misses_of_one_loan_in_a_batch_write_one_task_per_method() -> None:
    events = [posting("L-1", "missed", 31), posting("L-1", "missed", 61, POSTED + timedelta(1))]
    merged = policy.merge_plans(planning.plan_repayments(P, events, {"L-1": facts("L-1")}).plans)
    assert [(m.method, m.due_on) for m in merged] == [
        (FIELD, date(2026, 6, 8)),
        (PHONE, date(2026, 6, 3)),
    ]
    assert all(m.source_event_id == events[0].event_id for m in merged)
    assert all(m.reason["also"][0]["inputs"]["days_past_due"] == 61 for m in merged)
    assert all(m.reason["policy_version"] == 7 for m in merged)


def test_visits_complete_their_task_once_and_plan_by_the_loans_risk() -> None:
    task = uuid.uuid4()
    loans = {
        "L-1": facts("L-1", "E"),
        "L-2": facts("L-2", "A", 45),
    }
    events = [
        visit("L-1", task_id=task),
        visit("L-1", task_id=task),  # the same task twice: the first visit did it
        visit("L-2", outcome="borrower_unreachable"),
    ]
    batch = planning.plan_visits(P, events, loans)
    assert [(c.task_id, c.visit_id) for c in batch.completions] == [(task, events[0].visit_id)]
    by_loan = {p.loan_id: p.visit for p in batch.plans}
    # E, LTV 0.8, 31 months left: 3 + 1 + 1 points, high tier: a contact a month later.
    assert (by_loan["L-1"].method, by_loan["L-1"].due_on) == (PHONE, date(2026, 7, 1))
    assert by_loan["L-1"].reason["inputs"]["risk_tier"] == "high"
    assert (by_loan["L-2"].method, by_loan["L-2"].reason["rule"]) == (
        FIELD,
        "after_borrower_unreachable",
    )
    assert {s.loan_id: s.last_visit_on for s in batch.standings} == {
        "L-1": date(2026, 6, 1),
        "L-2": date(2026, 6, 1),
    }


def alert(
    action: str,
    *,
    severity: str = "high",
    alert_id: uuid.UUID | None = None,
    rule: str = "r",
    at: datetime = POSTED,
) -> AlertRaised:
    return AlertRaised.model_validate(
        {
            "loan_id": "L-9",
            "occurred_at": at,
            "alert_id": alert_id or uuid.uuid4(),
            "rule": rule,
            "category": "vehicle",
            "severity": severity,
            "reason": "seen",
            "source_event_id": uuid.uuid4(),
            "recommended_action": action,
        }
    )


def test_only_alerts_recommending_a_visit_plan_and_unknown_loans_are_named() -> None:
    events = [alert("legal_review"), alert("repossession_review")]
    batch = planning.plan_alerts(P, events, {"L-9": facts("L-9")}, {})
    [planned] = batch.plans
    assert (planned.source_event_id, planned.visit.method) == (events[1].event_id, FIELD)
    assert planned.visit.reason["inputs"]["alert_id"] == str(events[1].alert_id)
    # Two alerts, both high: each moves the loan a tier up (shift +2, the bound).
    assert [(s.loan_id, s.tier_shift) for s in batch.standings] == [("L-9", 2)]
    assert {a.alert_id for a in batch.alerts} == {e.alert_id for e in events}
    refused = planning.unregistered(events, {"L-1"})
    assert refused == {e.event_id: "loan L-9 is not registered with the scheduler" for e in events}
    assert planning.unregistered(events, {"L-9"}) == {}


def test_an_escalated_alert_is_a_new_plan_and_moves_the_tier_once_per_alert() -> None:
    alert_id = uuid.uuid4()
    raised = alert("phone_visit", severity="medium", alert_id=alert_id, rule="dpd_30")
    worse = alert(
        "field_visit",
        severity="high",
        alert_id=alert_id,
        rule="dpd_60",
        at=POSTED + timedelta(days=30),
    )
    again = alert(
        "field_visit",
        severity="high",
        alert_id=alert_id,
        rule="dpd_60",
        at=POSTED + timedelta(days=40),
    )
    loans = {"L-9": facts("L-9")}
    first = planning.plan_alerts(P, [raised], loans, {})
    assert [p.visit.method for p in first.plans] == [PHONE] and first.standings == []
    [seen] = first.alerts
    # The escalation, same alert id: its own visit (a field one), the rule it escalated
    # from, and the tier up that a high alert asks for.
    second = planning.plan_alerts(P, [worse], loans, {alert_id: seen})
    [field] = second.plans
    assert field.visit.method == FIELD and field.source_event_id == worse.event_id
    assert field.visit.reason["inputs"]["escalated_from"] == "dpd_30"
    assert [(s.loan_id, s.tier_shift) for s in second.standings] == [("L-9", 1)]
    [escalated] = second.alerts
    assert escalated.state == ("dpd_60", "high", "field_visit")
    # Re-published after its suppression window: its visit again, the tier not again.
    third = planning.plan_alerts(P, [again], loans, {alert_id: escalated})
    assert [p.visit.method for p in third.plans] == [FIELD] and third.standings == []
    assert "escalated_from" not in third.plans[0].visit.reason["inputs"]
    # A replay of a publication already acted on (or an older one) changes nothing.
    replay = planning.plan_alerts(P, [worse, raised], loans, {alert_id: third.alerts[0]})
    assert (replay.plans, replay.standings, replay.alerts) == ([], [], [])
    # Raised and escalated in one batch: both plans, one tier up.
    both = planning.plan_alerts(P, [raised, worse], loans, {})
    assert [p.visit.method for p in both.plans] == [PHONE, FIELD]
    assert [(s.loan_id, s.tier_shift) for s in both.standings] == [("L-9", 1)]


# --- dispatch -----------------------------------------------------------------------------

DAY = date(2026, 7, 1)


def agent(
    agent_id: str,
    *,
    region: str = "SH",
    methods: tuple[str, ...] = ("phone", "field"),
    capacity: int = 2,
    open_tasks: int = 0,
    due: dict[date, int] | None = None,
) -> RosterAgent:
    return RosterAgent(agent_id, region, frozenset(methods), capacity, open_tasks, due or {})


def agents_of(assigned: dict[uuid.UUID, Assignment]) -> dict[uuid.UUID, str]:
    return {task_id: a.agent_id for task_id, a in assigned.items()}


def waiting(n: int, *, region: str = "SH", method: str = "phone", day: date = DAY) -> list[Any]:
    return [WaitingTask(uuid.uuid4(), region, method, day) for _ in range(n)]


def test_a_pass_spreads_tasks_by_room_on_the_day_then_load() -> None:
    roster = [
        agent("a", open_tasks=0, due={DAY: 2}),  # full that day
        agent("b", open_tasks=3),
        agent("c", open_tasks=1),
    ]
    tasks = waiting(4)
    got = agents_of(policy.assign_tasks(tasks, roster))
    # c (fewest open) takes two and is then full that day too; b takes the rest.
    counts = {a: list(got.values()).count(a) for a in "abc"}
    assert counts == {"a": 0, "b": 2, "c": 2}
    assert len(got) == 4


def test_when_every_able_agent_is_full_the_least_loaded_still_gets_the_task() -> None:
    roster = [agent("a", open_tasks=5, due={DAY: 2}), agent("b", open_tasks=4, due={DAY: 2})]
    [task] = waiting(1)
    assert agents_of(policy.assign_tasks([task], roster)) == {task.task_id: "b"}


def test_tasks_go_only_to_agents_of_their_region_and_method() -> None:
    roster = [
        agent("bj", region="BJ"),
        agent("caller", methods=("phone",)),
        agent("driver", methods=("field",), open_tasks=9),
    ]
    phone, field, elsewhere = waiting(1), waiting(1, method="field"), waiting(1, region="GZ")
    got = agents_of(policy.assign_tasks([*phone, *field, *elsewhere], roster))
    assert got == {phone[0].task_id: "caller", field[0].task_id: "driver"}  # GZ waits


def test_capacity_is_counted_per_due_day() -> None:
    roster = [agent("a", capacity=1), agent("b", capacity=1, open_tasks=1)]
    today = waiting(2)
    tomorrow = waiting(1, day=DAY + timedelta(days=1))
    got = agents_of(policy.assign_tasks([*tomorrow, *today], roster))
    # Soonest first: a then b on DAY (each then full), and a has room the day after.
    assert sorted(got[t.task_id] for t in today) == ["a", "b"]
    assert got[tomorrow[0].task_id] == "a"


# DAY (2026-07-01) is a Wednesday.
WEEKDAYS = frozenset({1, 2, 3, 4, 5})


def test_nobody_gets_a_task_due_on_a_day_off_or_away() -> None:
    away = replace(agent("away"), absences=((DAY - timedelta(days=1), DAY + timedelta(days=2)),))
    weekend_only = replace(agent("weekend"), working_days=frozenset({6, 7}))
    present = agent("present", open_tasks=50)
    [task] = waiting(1)
    got = policy.assign_tasks([task], [away, weekend_only, present], DAY)
    assert got == {task.task_id: Assignment("present", DAY)}  # busiest, but the one there


def test_when_nobody_works_the_due_day_the_task_moves_to_the_nearest_day_someone_does() -> None:
    saturday = DAY + timedelta(days=3)
    weekdays = replace(agent("a"), working_days=WEEKDAYS)
    [task] = waiting(1, day=saturday)
    # Friday, before the due date: a visit is never made later than planned when it can
    # be made sooner.
    assert policy.assign_tasks([task], [weekdays], DAY) == {
        task.task_id: Assignment("a", DAY + timedelta(days=2))
    }
    # Due today with the agent away until Monday: the first day back.
    back = replace(weekdays, absences=((DAY, DAY + timedelta(days=4)),))
    [urgent] = waiting(1)
    assert policy.assign_tasks([urgent], [back], DAY) == {
        urgent.task_id: Assignment("a", DAY + timedelta(days=5))
    }


def test_a_borrower_keeps_its_agent_while_it_has_room() -> None:
    roster = [agent("a", open_tasks=0), agent("b", open_tasks=5, capacity=1)]
    [task] = [replace(t, previous_agent="b") for t in waiting(1)]
    assert agents_of(policy.assign_tasks([task], roster)) == {task.task_id: "b"}
    full = [agent("a"), agent("b", open_tasks=5, capacity=1, due={DAY: 1})]
    assert agents_of(policy.assign_tasks([task], full)) == {task.task_id: "a"}
