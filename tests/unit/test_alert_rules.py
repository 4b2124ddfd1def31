"""Alert rules: pure functions, no database or broker."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.alerts import rules
from services.alerts.rules import AlertDraft
from shared.events import RepaymentPosted, VisitCompleted, VisitFindings
from shared.vocabulary import AgreedUsage


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


def _visit(outcome: str = "completed", **findings: Any) -> VisitCompleted:
    return VisitCompleted(
        loan_id="L-1",
        visit_id=uuid.uuid4(),
        agent_id="AG-1",
        method="field",
        outcome=outcome,
        started_at=datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
        ended_at=datetime(2026, 11, 20, 9, 40, tzinfo=UTC),
        findings=VisitFindings.model_validate(findings),
    )


def _verdict(draft: AlertDraft) -> tuple[str, str, str, str]:
    return (draft.rule, draft.category, draft.severity, draft.recommended_action)


def _rules(drafts: list[AlertDraft]) -> list[str]:
    return [d.rule for d in drafts]


# --- repayment ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "dpd", "rule", "severity", "action"),
    [
        ("missed", 0, "missed_installment", "medium", "phone_visit"),
        ("missed", 29, "missed_installment", "medium", "phone_visit"),
        ("partial", 29, "partial_payment", "low", "phone_visit"),
        ("missed", 30, "dpd_30", "high", "repayment_plan"),
        ("partial", 30, "dpd_30", "high", "repayment_plan"),
        ("missed", 89, "dpd_30", "high", "repayment_plan"),
        ("missed", 90, "dpd_90", "critical", "legal_review"),
        ("partial", 90, "dpd_90", "critical", "legal_review"),
        ("missed", 400, "dpd_90", "critical", "legal_review"),
    ],
)
def test_arrears_escalate_at_30_and_90_days_past_due(
    status: str, dpd: int, rule: str, severity: str, action: str
) -> None:
    [draft] = rules.repayment_alerts(_posting(status, dpd))
    assert _verdict(draft) == (rule, "repayment", severity, action)


@pytest.mark.parametrize("status", ["paid", "reversed"])
@pytest.mark.parametrize("dpd", [0, 95])
def test_paid_and_reversed_postings_raise_nothing(status: str, dpd: int) -> None:
    assert rules.repayment_alerts(_posting(status, dpd)) == []


def test_repayment_reason_names_installment_amounts_and_dpd() -> None:
    [draft] = rules.repayment_alerts(_posting("partial", 12))
    for fact in ("installment 7", "3000.00", "1200.00", "12 days past due"):
        assert fact in draft.reason


# --- visit --------------------------------------------------------------------------------


def test_a_clean_visit_raises_nothing() -> None:
    visit = _visit(
        identity_verified=True,
        employment_status="stable",
        vehicle_sighted=True,
        vehicle_usage="private",
        vehicle_condition="good",
        collateral_documents_intact=True,
    )
    assert rules.visit_alerts(visit, AgreedUsage.PRIVATE) == []


@pytest.mark.parametrize("usage", ["commercial", "ride_hailing", "lent_out"])
def test_usage_other_than_agreed_is_misuse(usage: str) -> None:
    [draft] = rules.visit_alerts(_visit(vehicle_usage=usage), AgreedUsage.PRIVATE)
    assert _verdict(draft) == ("vehicle_misuse", "vehicle", "high", "field_visit")
    assert usage in draft.reason and "private" in draft.reason


def test_usage_equal_to_agreed_raises_nothing() -> None:
    assert rules.visit_alerts(_visit(vehicle_usage="ride_hailing"), AgreedUsage.RIDE_HAILING) == []


def test_unknown_usage_raises_nothing() -> None:
    assert rules.visit_alerts(_visit(vehicle_usage="unknown"), AgreedUsage.PRIVATE) == []


def test_unknown_loan_skips_only_the_misuse_rule() -> None:
    visit = _visit(vehicle_usage="commercial", encumbrance_detected=True)
    assert _rules(rules.visit_alerts(visit, None)) == ["collateral_encumbered"]


@pytest.mark.parametrize(
    ("findings", "rule", "category", "severity", "action"),
    [
        (
            {"encumbrance_detected": True},
            "collateral_encumbered",
            "collateral",
            "critical",
            "legal_review",
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
    ],
)
def test_each_bad_finding_raises_its_alert(
    findings: dict[str, Any], rule: str, category: str, severity: str, action: str
) -> None:
    [draft] = rules.visit_alerts(_visit(**findings), AgreedUsage.PRIVATE)
    assert _verdict(draft) == (rule, category, severity, action)
    assert draft.reason


@pytest.mark.parametrize(
    "findings",
    [
        {"collateral_documents_intact": None},  # not checked is not a breach
        {"collateral_documents_intact": True},
        {"employment_status": "changed"},
        {"vehicle_condition": "unknown"},
        {"encumbrance_detected": False, "repayment_difficulty": False},
    ],
)
def test_neutral_or_unchecked_findings_raise_nothing(findings: dict[str, Any]) -> None:
    assert rules.visit_alerts(_visit(**findings), AgreedUsage.PRIVATE) == []


@pytest.mark.parametrize(
    ("outcome", "rule"),
    [("borrower_unreachable", "borrower_unreachable"), ("refused", "visit_refused")],
)
def test_failed_contact_calls_for_a_field_visit(outcome: str, rule: str) -> None:
    [draft] = rules.visit_alerts(_visit(outcome), None)
    assert _verdict(draft) == (rule, "contact", "medium", "field_visit")


def test_several_findings_raise_one_alert_each() -> None:
    visit = _visit(
        vehicle_usage="commercial",
        encumbrance_detected=True,
        vehicle_condition="damaged",
        collateral_documents_intact=False,
        employment_status="unemployed",
        repayment_difficulty=True,
    )
    assert _rules(rules.visit_alerts(visit, AgreedUsage.PRIVATE)) == [
        "vehicle_misuse",
        "collateral_encumbered",
        "vehicle_damaged",
        "documents_not_intact",
        "borrower_unemployed",
        "repayment_difficulty",
    ]
