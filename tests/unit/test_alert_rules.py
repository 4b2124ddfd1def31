"""Alert rules: pure functions over an event and the loan's story, no database or broker."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.alerts import rules
from services.alerts.rules import Finding, PostingMemo, RuleSetError, VisitMemo
from shared.events import RepaymentPosted, VisitCompleted, VisitFindings
from shared.vocabulary import AgreedUsage, RepaymentStatus, VisitOutcome

RULES = rules.current()
T0 = datetime(2026, 11, 20, 9, 40, tzinfo=UTC)


def _posting(status: str, dpd: int, **overrides: Any) -> RepaymentPosted:
    fields: dict[str, Any] = {
        "loan_id": "L-1",
        "installment_no": 7,
        "due_date": date(2026, 11, 15),
        "amount_due": Decimal("3000.00"),
        "amount_paid": Decimal("0.00") if status == "missed" else Decimal("1200.00"),
        "status": status,
        "days_past_due": dpd,
        "outstanding_principal": Decimal("64000.00"),
        **overrides,
    }
    return RepaymentPosted.model_validate(fields)


def _visit(outcome: str = "completed", ended: datetime = T0, **findings: Any) -> VisitCompleted:
    return VisitCompleted(
        loan_id="L-1",
        visit_id=uuid.uuid4(),
        agent_id="AG-1",
        method="field",
        outcome=outcome,
        started_at=ended - timedelta(minutes=40),
        ended_at=ended,
        findings=VisitFindings.model_validate(findings),
    )


def _verdict(finding: Finding) -> tuple[str, str, str, str, str]:
    rule = finding.rule
    return (rule.code, rule.family, rule.category, rule.severity, rule.action)


def _codes(found: list[Finding]) -> list[str]:
    return [f.rule.code for f in found]


def _missed(no: int) -> PostingMemo:
    return PostingMemo(uuid.uuid4(), no, RepaymentStatus.MISSED, 10, "3000.00", "0.00")


# --- the rule set -------------------------------------------------------------------------


def test_the_shipped_rules_file_has_a_version_and_every_family_ranked() -> None:
    assert RULES.version >= 1 and len(RULES.digest) == 64
    arrears = [r.code for r in RULES.families["arrears"].rules]
    assert arrears == ["dpd_1", "dpd_30", "dpd_60", "dpd_90"]
    assert [r.rank for r in RULES.families["arrears"].rules] == [0, 1, 2, 3]
    assert RULES.families["arrears"].suppress == timedelta(days=7)


def test_a_rules_file_naming_an_unknown_rule_is_refused() -> None:
    text = rules.RULES_FILE.read_text().replace("code: dpd_60", "code: dpd_61")
    with pytest.raises(RuleSetError, match="dpd_61"):
        rules.parse_rule_set(text)


def test_the_digest_changes_with_the_content() -> None:
    text = rules.RULES_FILE.read_text().replace("suppress_days: 7", "suppress_days: 8", 1)
    assert rules.parse_rule_set(text).digest != RULES.digest


# --- repayment ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dpd", "rule", "severity", "action"),
    [
        (1, "dpd_1", "low", "phone_visit"),
        (29, "dpd_1", "low", "phone_visit"),
        (30, "dpd_30", "medium", "repayment_plan"),
        (59, "dpd_30", "medium", "repayment_plan"),
        (60, "dpd_60", "high", "field_visit"),
        (89, "dpd_60", "high", "field_visit"),
        (90, "dpd_90", "critical", "legal_review"),
        (400, "dpd_90", "critical", "legal_review"),
    ],
)
def test_arrears_fall_in_their_dpd_bucket(dpd: int, rule: str, severity: str, action: str) -> None:
    [finding] = rules.repayment_findings(_posting("missed", dpd), [], RULES)
    assert _verdict(finding) == (rule, "arrears", "repayment", severity, action)
    assert finding.facts["days_past_due"] == dpd


def test_a_missed_installment_on_its_due_date_is_no_arrear_yet() -> None:
    assert rules.repayment_findings(_posting("missed", 0), [], RULES) == []


def test_a_paid_posting_at_zero_dpd_cures_and_finds_nothing() -> None:
    posting = _posting("paid", 0, amount_paid=Decimal("3000.00"))
    assert rules.cures(posting)
    assert rules.repayment_findings(posting, [], RULES) == []
    assert not rules.cures(_posting("paid", 12))


def test_a_partial_payment_is_found_beside_its_arrears() -> None:
    found = rules.repayment_findings(_posting("partial", 12), [], RULES)
    assert _codes(found) == ["dpd_1", "partial_payment"]
    for fact in ("installment 7", "3000.00", "1200.00", "12 days past due"):
        assert fact in found[1].reason


def test_a_reversed_payment_is_found() -> None:
    [finding] = rules.repayment_findings(_posting("reversed", 0), [], RULES)
    assert _verdict(finding) == (
        "payment_reversed",
        "reversal",
        "repayment",
        "high",
        "phone_visit",
    )


def test_two_consecutive_missed_installments_are_found() -> None:
    found = rules.repayment_findings(_posting("missed", 40, installment_no=7), [_missed(6)], RULES)
    assert _codes(found) == ["dpd_30", "missed_consecutive"]
    assert found[1].facts["missed_installments"] == [6, 7]


def test_a_miss_after_a_paid_installment_is_not_consecutive() -> None:
    paid = PostingMemo(uuid.uuid4(), 6, RepaymentStatus.PAID, 0, "3000.00", "3000.00")
    earlier = [_missed(6), paid]  # installment 6 was missed, then paid late
    found = rules.repayment_findings(_posting("missed", 5, installment_no=7), earlier, RULES)
    assert _codes(found) == ["dpd_1"]
    found = rules.repayment_findings(_posting("missed", 5, installment_no=7), [_missed(5)], RULES)
    assert _codes(found) == ["dpd_1"]


@pytest.mark.parametrize(
    ("status", "dpd"),
    [("paid", 0), ("paid", 12), ("partial", 0), ("partial", 45), ("reversed", 3)],
)
def test_only_a_miss_reads_the_loans_story(status: str, dpd: int) -> None:
    """The worker reads a loan's earlier postings back only for a posting that
    `reads_story`: for any other, a story of misses must change nothing."""
    posting = _posting(status, dpd, installment_no=7)
    story = [_missed(no) for no in range(1, 7)]
    assert not rules.reads_story(posting)
    with_story = rules.repayment_findings(posting, story, RULES)
    assert _codes(with_story) == _codes(rules.repayment_findings(posting, [], RULES))
    assert rules.reads_story(_posting("missed", dpd, installment_no=7))


# --- visit --------------------------------------------------------------------------------


def test_a_clean_visit_finds_nothing() -> None:
    visit = _visit(
        identity_verified=True,
        employment_status="stable",
        vehicle_sighted=True,
        vehicle_usage="private",
        vehicle_condition="good",
        collateral_documents_intact=True,
    )
    assert rules.visit_findings(visit, AgreedUsage.PRIVATE, [], RULES) == []


@pytest.mark.parametrize("usage", ["commercial", "ride_hailing", "lent_out"])
def test_usage_other_than_agreed_is_misuse(usage: str) -> None:
    [found] = rules.visit_findings(_visit(vehicle_usage=usage), AgreedUsage.PRIVATE, [], RULES)
    assert _verdict(found) == ("vehicle_misuse", "misuse", "vehicle", "high", "field_visit")
    assert usage in found.reason and "private" in found.reason


def test_unknown_loan_skips_only_the_misuse_rule() -> None:
    visit = _visit(vehicle_usage="commercial", encumbrance_detected=True)
    assert _codes(rules.visit_findings(visit, None, [], RULES)) == ["collateral_encumbered"]


@pytest.mark.parametrize(
    ("findings", "rule", "category", "severity", "action"),
    [
        (
            {"encumbrance_detected": True},
            "collateral_encumbered",
            "collateral",
            "critical",
            "repossession_review",
        ),
        (
            {"vehicle_condition": "missing"},
            "vehicle_missing",
            "collateral",
            "critical",
            "repossession_review",
        ),
        ({"vehicle_condition": "damaged"}, "vehicle_damaged", "vehicle", "medium", "field_visit"),
        (
            {"collateral_documents_intact": False},
            "documents_not_intact",
            "collateral",
            "high",
            "legal_review",
        ),
        (
            {"employment_status": "unemployed"},
            "borrower_unemployed",
            "borrower",
            "high",
            "repayment_plan",
        ),
        (
            {"repayment_difficulty": True},
            "repayment_difficulty",
            "borrower",
            "medium",
            "repayment_plan",
        ),
        (
            {"income_change": "decreased", "repayment_difficulty": True},
            "income_loss_with_difficulty",
            "borrower",
            "high",
            "repayment_plan",
        ),
        (
            {"employment_status": "unemployed", "repayment_difficulty": True},
            "income_loss_with_difficulty",
            "borrower",
            "high",
            "repayment_plan",
        ),
    ],
)
def test_each_bad_finding_is_found_once(
    findings: dict[str, Any], rule: str, category: str, severity: str, action: str
) -> None:
    [found] = rules.visit_findings(_visit(**findings), AgreedUsage.PRIVATE, [], RULES)
    code, _, found_category, found_severity, found_action = _verdict(found)
    assert (code, found_category, found_severity, found_action) == (
        rule,
        category,
        severity,
        action,
    )


@pytest.mark.parametrize(
    "findings",
    [
        {"collateral_documents_intact": None},  # not checked is not a breach
        {"employment_status": "changed"},
        {"income_change": "decreased"},  # less income alone, without difficulty
        {"vehicle_condition": "unknown"},
    ],
)
def test_neutral_or_unchecked_findings_find_nothing(findings: dict[str, Any]) -> None:
    assert rules.visit_findings(_visit(**findings), AgreedUsage.PRIVATE, [], RULES) == []


def _unreachable_memo(days_before: int, occasion: str | None = None) -> VisitMemo:
    return VisitMemo(
        uuid.uuid4(),
        occasion or str(uuid.uuid4()),
        VisitOutcome.BORROWER_UNREACHABLE,
        T0 - timedelta(days=days_before),
    )


def test_unreachable_three_times_in_30_days_is_found() -> None:
    earlier = [_unreachable_memo(20), _unreachable_memo(3)]
    [found] = rules.visit_findings(_visit("borrower_unreachable"), None, earlier, RULES)
    assert _verdict(found) == ("unreachable_repeated", "contact", "contact", "high", "field_visit")
    assert found.facts["unreachable_visits"] == 3


def test_unreachable_visits_outside_30_days_or_corrections_do_not_count() -> None:
    twice = [_unreachable_memo(31), _unreachable_memo(3, "task-1"), _unreachable_memo(2, "task-1")]
    [found] = rules.visit_findings(_visit("borrower_unreachable"), None, twice, RULES)
    assert found.rule.code == "borrower_unreachable"
    assert found.facts["unreachable_visits"] == 2


def test_a_refused_visit_calls_for_a_field_visit() -> None:
    [found] = rules.visit_findings(_visit("refused"), None, [], RULES)
    assert _verdict(found) == ("visit_refused", "refusal", "contact", "medium", "field_visit")
