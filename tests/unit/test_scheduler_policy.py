"""Visit planning policy: pure rules of a policy object, no database."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from services.scheduler import policy
from services.scheduler.policy import AgentLoad, PlannedVisit, Record
from services.scheduler.visit_policy import (
    BadFinding,
    PolicyInForce,
    Tier,
    default_policy,
    parse_policy,
)
from shared.events.models import VisitFindings
from shared.vocabulary import VisitMethod

P = PolicyInForce(3, default_policy())
RISK = P.rules.risk_tier


def with_rules(**changes: Any) -> PolicyInForce:
    """The default policy with top-level sections replaced (validated again)."""
    document = P.rules.model_dump(mode="json") | changes
    return PolicyInForce(4, type(P.rules).model_validate(document))


# --- the policy file ----------------------------------------------------------------------


def test_the_shipped_policy_file_is_the_lenders_procedure() -> None:
    rules = P.rules
    assert (rules.first_follow_up.method, rules.first_follow_up.after_months) == ("phone", 1)
    cadence = {t: rules.tiers.of(t).contact_every_months for t in Tier}
    assert cadence == {Tier.HIGH: 1, Tier.MEDIUM: 3, Tier.LOW: 6}
    assert all(rules.tiers.of(t).field_every_months <= 12 for t in Tier)
    assert rules.tiers.high.field_every_months < 12
    assert (rules.arrears.call_within_days, rules.arrears.field_within_days) == (2, 7)
    assert rules.arrears.field_from_dpd == 30
    assert rules.clean_record.on_time_installments == 6


@pytest.mark.parametrize(
    ("section", "value", "field"),
    [
        (
            "tiers",
            {
                "high": {
                    "contact_every_months": 1,
                    "field_every_months": 13,
                    "third_party_every_months": 1,
                }
            },
            "tiers.high",
        ),
        ("arrears", {"call_within_days": -1}, "arrears.call_within_days"),
        ("planning", {"horizon_days": 30, "surprise": 1}, "planning.surprise"),
    ],
)
def test_an_invalid_policy_names_the_field(section: str, value: Any, field: str) -> None:
    document = P.rules.model_dump(mode="json")
    document[section] = {**document[section], **value} if section != "planning" else value
    with pytest.raises(ValidationError) as raised:
        type(P.rules).model_validate(document)
    locations = [".".join(str(p) for p in e["loc"]) for e in raised.value.errors()]
    assert any(loc.startswith(field) for loc in locations), locations


def test_a_policy_where_risk_lowers_the_frequency_is_refused() -> None:
    tiers = P.rules.model_dump(mode="json")["tiers"]
    tiers["high"]["contact_every_months"] = 4  # less often than medium
    with pytest.raises(ValidationError, match="must not grow with risk"):
        with_rules(tiers=tiers)


def test_yaml_that_does_not_parse_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not YAML"):
        parse_policy("tiers: [unclosed")


# --- risk tier ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grade", "ltv", "months", "shift", "tier"),
    [
        ("A", Decimal("0.50"), 12, 0, Tier.LOW),  # 0 points
        ("A", Decimal("0.50"), 30, 0, Tier.MEDIUM),  # long term: 1
        ("C", Decimal("0.79"), 12, 0, Tier.MEDIUM),  # grade: 1
        ("C", Decimal("0.80"), 30, 0, Tier.HIGH),  # 1 + 1 + 1
        ("A", Decimal("1.00"), 30, 0, Tier.HIGH),  # 0 + 2 + 1
        ("A", None, 0, 0, Tier.MEDIUM),  # a car worth nothing reaches every LTV band
        ("E", Decimal("0.10"), 0, 0, Tier.HIGH),
        ("E", Decimal("0.10"), 0, -1, Tier.MEDIUM),  # a clean record: one down
        ("A", Decimal("0.10"), 0, 1, Tier.MEDIUM),  # an alert: one up
        ("A", Decimal("0.10"), 0, -2, Tier.LOW),  # never below low
        ("E", Decimal("0.10"), 0, 2, Tier.HIGH),  # never above high
    ],
)
def test_risk_tier_from_grade_ltv_and_remaining_term(
    grade: str, ltv: Decimal | None, months: int, shift: int, tier: Tier
) -> None:
    got = policy.risk_tier(RISK, credit_grade=grade, ltv=ltv, remaining_months=months, shift=shift)
    assert got == tier


def test_remaining_term_counts_whole_months_as_postgresql_age_does() -> None:
    assert policy.months_between(date(2026, 1, 31), date(2026, 2, 28)) == 0
    assert policy.months_between(date(2026, 1, 31), date(2026, 3, 31)) == 2
    assert policy.remaining_term(36, date(2026, 1, 15), date(2027, 1, 14)) == 25
    assert policy.remaining_term(12, date(2020, 1, 1), date(2026, 1, 1)) == 0


# --- routine plan -------------------------------------------------------------------------


def test_first_follow_up_is_a_phone_visit_one_month_after_disbursement() -> None:
    visit = policy.first_follow_up(P, date(2026, 1, 31))
    assert visit.method == "phone"
    assert visit.due_on == date(2026, 2, 28)  # clamped to month end
    assert visit.reason == {
        "rule": "first_follow_up",
        "inputs": {"disbursed_on": "2026-01-31", "after_months": 1},
        "policy_version": 3,
    }


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


def test_routine_plan_by_tier_every_loan_inspected_in_the_field_within_a_year() -> None:
    disbursed = date(2026, 1, 10)
    for tier, contact, field in ((Tier.HIGH, 1, 6), (Tier.MEDIUM, 3, 12), (Tier.LOW, 6, 12)):
        phone, inspection, check = policy.routine_visits(
            P,
            tier=tier,
            disbursed_on=disbursed,
            last_visit_on=date(2026, 3, 1),
            last_field_on=None,
            last_third_party_on=None,
        )
        assert (phone.method, phone.rule) == (VisitMethod.PHONE, "routine_contact")
        assert phone.due_on == policy.add_months(date(2026, 3, 1), contact)
        assert inspection.due_on == policy.add_months(disbursed, field)
        assert inspection.due_on <= policy.add_months(disbursed, 12)
        assert (check.method, check.rule) == (VisitMethod.THIRD_PARTY, "third_party_check")
        assert check.reason["inputs"]["checks"] == [
            "gps_position",
            "ride_hailing_registry",
            "credit_bureau",
        ]
    never_visited = policy.routine_visits(
        P,
        tier=Tier.LOW,
        disbursed_on=disbursed,
        last_visit_on=None,
        last_field_on=None,
        last_third_party_on=None,
    )
    assert never_visited[0] == policy.first_follow_up(P, disbursed)


def test_next_contact_after_a_visit_by_tier() -> None:
    def after(tier: Tier, dpd: int = 0, outcome: str = "completed") -> PlannedVisit:
        return policy.next_routine_visit(
            P, visited_on=date(2026, 6, 1), tier=tier, days_past_due=dpd, outcome=outcome
        )

    assert after(Tier.HIGH).due_on == date(2026, 7, 1)
    assert after(Tier.MEDIUM).due_on == date(2026, 9, 1)
    assert after(Tier.LOW).due_on == date(2026, 12, 1)
    overdue = after(Tier.LOW, dpd=10)
    assert (overdue.method, overdue.due_on, overdue.rule) == (
        VisitMethod.PHONE,
        date(2026, 6, 8),
        "overdue_follow_up",
    )
    assert after(Tier.LOW, dpd=30).method == VisitMethod.FIELD
    unreachable = after(Tier.LOW, outcome="borrower_unreachable")
    assert (unreachable.method, unreachable.due_on) == (VisitMethod.FIELD, date(2026, 6, 8))


# --- arrears, records, findings, alerts ---------------------------------------------------


@pytest.mark.parametrize("status", ["paid", "reversed"])
def test_paid_installment_plans_nothing(status: str) -> None:
    assert (
        policy.visits_for_repayment(
            P, posted_on=date(2026, 6, 1), status=status, days_past_due=0, installment_no=3
        )
        == []
    )


@pytest.mark.parametrize(("dpd", "field"), [(0, False), (29, False), (30, True), (95, True)])
def test_missed_installment_calls_within_two_days_and_from_30_dpd_inspects(
    dpd: int, field: bool
) -> None:
    visits = policy.visits_for_repayment(
        P, posted_on=date(2026, 6, 1), status="missed", days_past_due=dpd, installment_no=3
    )
    assert (visits[0].method, visits[0].due_on) == (VisitMethod.PHONE, date(2026, 6, 3))
    assert (len(visits) == 2) is field
    if field:
        assert (visits[1].method, visits[1].due_on) == (VisitMethod.FIELD, date(2026, 6, 8))


def test_six_on_time_installments_after_a_clean_visit_move_a_loan_one_tier_down() -> None:
    record = Record(on_time_streak=0, last_visit_clean=True, tier_shift=0)
    for _ in range(5):
        record = policy.after_posting(P, record, status="paid", days_past_due=0)
    assert (record.on_time_streak, record.tier_shift) == (5, 0)
    record = policy.after_posting(P, record, status="paid", days_past_due=0)
    assert (record.on_time_streak, record.tier_shift) == (0, -1)  # counting starts again
    late = policy.after_posting(P, Record(5, True, 0), status="partial", days_past_due=3)
    assert (late.on_time_streak, late.tier_shift) == (0, 0)
    unclean = policy.after_posting(P, Record(5, False, 0), status="paid", days_past_due=0)
    assert (unclean.on_time_streak, unclean.tier_shift) == (6, 0)


def test_bad_findings_ask_for_a_field_visit_within_a_week() -> None:
    findings = VisitFindings.model_validate(
        {
            "vehicle_condition": "missing",
            "employment_status": "stable",
            "income_change": "decreased",
        }
    )
    found = policy.bad_findings(P, findings)
    assert found == [BadFinding.VEHICLE_MISSING, BadFinding.INCOME_DECREASED]
    visit = policy.visit_for_findings(P, visited_on=date(2026, 6, 1), found=found)
    assert visit is not None
    assert (visit.method, visit.due_on, visit.rule) == (
        VisitMethod.FIELD,
        date(2026, 6, 8),
        "bad_findings",
    )
    assert policy.bad_findings(P, VisitFindings()) == []


def test_alerts_plan_the_visit_their_action_asks_for_and_serious_ones_raise_the_tier() -> None:
    visit = policy.visit_for_alert(
        P,
        raised_on=date(2026, 6, 1),
        recommended_action="field_visit",
        rule="vehicle_misuse",
        severity="high",
    )
    assert visit is not None and (visit.method, visit.due_on) == ("field", date(2026, 6, 8))
    assert visit.reason["inputs"]["alert_rule"] == "vehicle_misuse"
    assert (
        policy.visit_for_alert(
            P,
            raised_on=date(2026, 6, 1),
            recommended_action="legal_review",
            rule="dpd_90",
            severity="critical",
        )
        is None
    )
    assert [policy.alert_tiers_up(P, s) for s in ("low", "medium", "high", "critical")] == [
        0,
        0,
        1,
        1,
    ]


def test_collateral_review_when_ltv_reaches_the_limit() -> None:
    assert not policy.over_ltv_limit(P, Decimal("1.0999"))
    assert policy.over_ltv_limit(P, Decimal("1.1000"))
    review = policy.collateral_review(P, valued_on=date(2026, 6, 1), ltv=Decimal("1.2"))
    assert (review.method, review.due_on, review.rule) == (
        VisitMethod.FIELD,
        date(2026, 6, 1) + timedelta(days=14),
        "collateral_review",
    )


# --- merging and dispatch -----------------------------------------------------------------


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
