"""Visit planning policy: pure rules, no database."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from services.scheduler import policy
from services.scheduler.policy import AgentLoad, PlannedVisit
from shared.vocabulary import VisitMethod


def test_first_follow_up_is_a_phone_visit_one_month_after_disbursement() -> None:
    visit = policy.first_follow_up(date(2026, 1, 31))
    assert visit.method == "phone"
    assert visit.due_on == date(2026, 2, 28)  # clamped to month end
    assert visit.reason["rule"] == "first_follow_up"
    assert visit.reason["disbursed_on"] == "2026-01-31"


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 12, 15), 1, date(2027, 1, 15)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),
        (date(2026, 3, 31), 1, date(2026, 4, 30)),
        (date(2026, 5, 10), 12, date(2027, 5, 10)),
    ],
)
def test_add_months(day: date, months: int, expected: date) -> None:
    assert policy.add_months(day, months) == expected


def _next(grade: str, dpd: int = 0, outcome: str = "completed") -> PlannedVisit:
    return policy.next_routine_visit(
        visited_on=date(2026, 6, 1), credit_grade=grade, days_past_due=dpd, outcome=outcome
    )


def test_high_risk_grades_are_visited_far_more_often_than_low_risk() -> None:
    gaps = {g: (_next(g).due_on - date(2026, 6, 1)).days for g in "ABCDE"}
    assert gaps["A"] >= 90 and gaps["B"] >= 60  # months apart
    assert gaps["D"] <= 31 and gaps["E"] <= 14
    assert gaps["A"] >= 4 * gaps["D"]
    assert list(gaps.values()) == sorted(gaps.values(), reverse=True)


def test_overdue_loan_is_visited_sooner_and_in_person_from_30_dpd() -> None:
    clean, overdue, seriously = _next("A"), _next("A", dpd=5), _next("A", dpd=45)
    assert overdue.due_on < clean.due_on
    assert overdue.reason["rule"] == "overdue_follow_up"
    assert overdue.method == "phone"
    assert seriously.method == "field"


def test_unreachable_borrower_gets_a_field_visit_within_a_week() -> None:
    visit = _next("A", outcome="borrower_unreachable")
    assert visit.method == "field"
    assert visit.due_on - date(2026, 6, 1) <= timedelta(days=7)
    assert visit.reason["last_outcome"] == "borrower_unreachable"


@pytest.mark.parametrize("status", ["paid", "reversed"])
def test_paid_installment_plans_nothing(status: str) -> None:
    assert (
        policy.visits_for_repayment(
            posted_on=date(2026, 6, 1), status=status, days_past_due=0, installment_no=3
        )
        == []
    )


def test_missed_installment_plans_an_urgent_call_within_two_days() -> None:
    visits = policy.visits_for_repayment(
        posted_on=date(2026, 6, 1), status="missed", days_past_due=3, installment_no=3
    )
    assert [(v.method, v.due_on) for v in visits] == [("phone", date(2026, 6, 3))]
    assert visits[0].reason["days_past_due"] == 3


@pytest.mark.parametrize(("dpd", "field"), [(29, False), (30, True), (120, True)])
def test_field_inspection_from_30_days_past_due(dpd: int, field: bool) -> None:
    visits = policy.visits_for_repayment(
        posted_on=date(2026, 6, 1), status="partial", days_past_due=dpd, installment_no=4
    )
    field_visits = [v for v in visits if v.method == "field"]
    assert bool(field_visits) is field
    if field:
        assert field_visits[0].due_on == date(2026, 6, 8)


def test_alert_recommending_a_visit_plans_one() -> None:
    visit = policy.visit_for_alert(
        raised_on=date(2026, 6, 1),
        recommended_action="field_visit",
        rule="vehicle_misuse",
        severity="high",
    )
    assert visit is not None and visit.method == "field"
    assert visit.reason["alert_rule"] == "vehicle_misuse"
    none = policy.visit_for_alert(
        raised_on=date(2026, 6, 1),
        recommended_action="legal_review",
        rule="dpd_90",
        severity="critical",
    )
    assert none is None


def test_open_task_is_kept_or_advanced_never_duplicated() -> None:
    planned = PlannedVisit(VisitMethod.PHONE, date(2026, 6, 10), "x")
    assert policy.merge_with_open_task(None, planned) == "create"
    assert policy.merge_with_open_task(date(2026, 6, 5), planned) == "keep"
    assert policy.merge_with_open_task(date(2026, 6, 20), planned) == "advance"


def test_agent_with_fewest_open_tasks_is_chosen_and_full_agents_last() -> None:
    loads = [
        AgentLoad("a-busy", open_tasks=9, due_that_day=0, daily_capacity=5),
        AgentLoad("b-free", open_tasks=1, due_that_day=5, daily_capacity=5),  # full that day
        AgentLoad("c-some", open_tasks=3, due_that_day=1, daily_capacity=5),
    ]
    assert policy.choose_agent(loads) == "c-some"
    assert policy.choose_agent([]) is None
    tie = [AgentLoad("z", 1, 0, 5), AgentLoad("m", 1, 0, 5)]
    assert policy.choose_agent(tie) == "m"
