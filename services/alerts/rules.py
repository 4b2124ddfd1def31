"""Alert rules: pure functions, no I/O (unit-tested without a database or a broker).

They turn the bad signs of the lender's procedure into alerts: an installment missed or
short-paid (repayment record), and what a visit found about the borrower, the vehicle and
the collateral (the four key items). Each rule has a stable code that operations filter
on and that the scheduler reads from `alert-raised`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared.events import (
    Category,
    RecommendedAction,
    RepaymentPosted,
    Severity,
    VisitCompleted,
)

# Days past due at which an arrear is escalated (the usual M1 / M3 buckets).
DPD_REPAYMENT_PLAN = 30
DPD_LEGAL_REVIEW = 90


@dataclass(frozen=True)
class AlertDraft:
    """An alert a rule wants raised, before it is stored and announced."""

    rule: str
    category: Category
    severity: Severity
    reason: str
    recommended_action: RecommendedAction


def repayment_alerts(posting: RepaymentPosted) -> list[AlertDraft]:
    """A missed or partial installment, escalated by how far the loan is past due."""
    if posting.status not in ("missed", "partial"):
        return []
    reason = (
        f"installment {posting.installment_no} {posting.status}: "
        f"due {posting.amount_due} CNY, paid {posting.amount_paid} CNY; "
        f"loan {posting.days_past_due} days past due"
    )
    dpd = posting.days_past_due
    if dpd >= DPD_LEGAL_REVIEW:
        return [AlertDraft("dpd_90", "repayment", "critical", reason, "legal_review")]
    if dpd >= DPD_REPAYMENT_PLAN:
        return [AlertDraft("dpd_30", "repayment", "high", reason, "repayment_plan")]
    if posting.status == "missed":
        return [AlertDraft("missed_installment", "repayment", "medium", reason, "phone_visit")]
    return [AlertDraft("partial_payment", "repayment", "low", reason, "phone_visit")]


VisitCheck = Callable[[VisitCompleted], bool]

# The findings rules that need nothing but the visit itself, in triage order.
_VISIT_RULES: tuple[tuple[VisitCheck, AlertDraft], ...] = (
    (
        lambda v: v.findings.encumbrance_detected,
        AlertDraft(
            "collateral_encumbered",
            "collateral",
            "critical",
            "vehicle is pledged, sold or transferred to a third party",
            "legal_review",
        ),
    ),
    (
        lambda v: v.findings.vehicle_condition == "missing",
        AlertDraft(
            "vehicle_missing",
            "collateral",
            "critical",
            "vehicle could not be found",
            "repossession_review",
        ),
    ),
    (
        lambda v: v.findings.vehicle_condition == "damaged",
        AlertDraft("vehicle_damaged", "vehicle", "medium", "vehicle is damaged", "field_visit"),
    ),
    (
        # None means the documents were not checked; only a definite "no" is a breach.
        lambda v: v.findings.collateral_documents_intact is False,
        AlertDraft(
            "documents_not_intact",
            "collateral",
            "high",
            "vehicle registration or loan documents are not intact",
            "legal_review",
        ),
    ),
    (
        lambda v: v.findings.employment_status == "unemployed",
        AlertDraft(
            "borrower_unemployed", "borrower", "high", "borrower is unemployed", "repayment_plan"
        ),
    ),
    (
        lambda v: v.findings.repayment_difficulty,
        AlertDraft(
            "repayment_difficulty",
            "borrower",
            "medium",
            "borrower reports difficulty repaying",
            "repayment_plan",
        ),
    ),
    (
        lambda v: v.outcome == "borrower_unreachable",
        AlertDraft(
            "borrower_unreachable",
            "contact",
            "medium",
            "borrower could not be reached for the visit",
            "field_visit",
        ),
    ),
    (
        lambda v: v.outcome == "refused",
        AlertDraft(
            "visit_refused", "contact", "medium", "borrower refused the visit", "field_visit"
        ),
    ),
)


def visit_alerts(visit: VisitCompleted, agreed_usage: str | None) -> list[AlertDraft]:
    """Every bad sign a visit found, one alert each.

    `agreed_usage` is the loan's contractual usage as the scheduler knows it; None when the
    loan is unknown there, and then only the misuse rule is skipped.
    """
    drafts: list[AlertDraft] = []
    usage = visit.findings.vehicle_usage
    if agreed_usage is not None and usage not in (agreed_usage, "unknown"):
        drafts.append(
            AlertDraft(
                "vehicle_misuse",
                "vehicle",
                "high",
                f"vehicle used as {usage}; the loan agreed {agreed_usage} use",
                "field_visit",
            )
        )
    drafts += [draft for applies, draft in _VISIT_RULES if applies(visit)]
    return drafts
