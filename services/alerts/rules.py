"""Alert rules: pure functions, no I/O (unit-tested without a database or a broker).

They turn the bad signs of the lender's procedure into alerts: an installment missed or
short-paid (repayment record), and what a visit found about the borrower, the vehicle and
the collateral (the four key items). Each rule has a stable code that operations filter
on and that the scheduler reads from `alert-raised`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared.events import RepaymentPosted, VisitCompleted
from shared.vocabulary import (
    DEFAULT_DPD,
    SERIOUS_ARREARS_DPD,
    AgreedUsage,
    Category,
    EmploymentStatus,
    RecommendedAction,
    RepaymentStatus,
    Severity,
    VehicleCondition,
    VehicleUsage,
    VisitOutcome,
)

# Days past due at which an arrear is escalated (the lender's M1 / M3 buckets).
DPD_REPAYMENT_PLAN = SERIOUS_ARREARS_DPD
DPD_LEGAL_REVIEW = DEFAULT_DPD


@dataclass(frozen=True)
class KnownLoan:
    """What the rules know of a loan, from its `loan-registered` facts."""

    agreed_usage: AgreedUsage


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
    if posting.status not in (RepaymentStatus.MISSED, RepaymentStatus.PARTIAL):
        return []
    reason = (
        f"installment {posting.installment_no} {posting.status}: "
        f"due {posting.amount_due} CNY, paid {posting.amount_paid} CNY; "
        f"loan {posting.days_past_due} days past due"
    )
    dpd = posting.days_past_due
    if dpd >= DPD_LEGAL_REVIEW:
        return [
            AlertDraft(
                "dpd_90",
                Category.REPAYMENT,
                Severity.CRITICAL,
                reason,
                RecommendedAction.LEGAL_REVIEW,
            )
        ]
    if dpd >= DPD_REPAYMENT_PLAN:
        return [
            AlertDraft(
                "dpd_30",
                Category.REPAYMENT,
                Severity.HIGH,
                reason,
                RecommendedAction.REPAYMENT_PLAN,
            )
        ]
    if posting.status == RepaymentStatus.MISSED:
        return [
            AlertDraft(
                "missed_installment",
                Category.REPAYMENT,
                Severity.MEDIUM,
                reason,
                RecommendedAction.PHONE_VISIT,
            )
        ]
    return [
        AlertDraft(
            "partial_payment",
            Category.REPAYMENT,
            Severity.LOW,
            reason,
            RecommendedAction.PHONE_VISIT,
        )
    ]


VisitCheck = Callable[[VisitCompleted], bool]

# The findings rules that need nothing but the visit itself, in triage order.
_VISIT_RULES: tuple[tuple[VisitCheck, AlertDraft], ...] = (
    (
        lambda v: v.findings.encumbrance_detected,
        AlertDraft(
            "collateral_encumbered",
            Category.COLLATERAL,
            Severity.CRITICAL,
            "vehicle is pledged, sold or transferred to a third party",
            RecommendedAction.LEGAL_REVIEW,
        ),
    ),
    (
        lambda v: v.findings.vehicle_condition == VehicleCondition.MISSING,
        AlertDraft(
            "vehicle_missing",
            Category.COLLATERAL,
            Severity.CRITICAL,
            "vehicle could not be found",
            RecommendedAction.REPOSSESSION_REVIEW,
        ),
    ),
    (
        lambda v: v.findings.vehicle_condition == VehicleCondition.DAMAGED,
        AlertDraft(
            "vehicle_damaged",
            Category.VEHICLE,
            Severity.MEDIUM,
            "vehicle is damaged",
            RecommendedAction.FIELD_VISIT,
        ),
    ),
    (
        # None means the documents were not checked; only a definite "no" is a breach.
        lambda v: v.findings.collateral_documents_intact is False,
        AlertDraft(
            "documents_not_intact",
            Category.COLLATERAL,
            Severity.HIGH,
            "vehicle registration or loan documents are not intact",
            RecommendedAction.LEGAL_REVIEW,
        ),
    ),
    (
        lambda v: v.findings.employment_status == EmploymentStatus.UNEMPLOYED,
        AlertDraft(
            "borrower_unemployed",
            Category.BORROWER,
            Severity.HIGH,
            "borrower is unemployed",
            RecommendedAction.REPAYMENT_PLAN,
        ),
    ),
    (
        lambda v: v.findings.repayment_difficulty,
        AlertDraft(
            "repayment_difficulty",
            Category.BORROWER,
            Severity.MEDIUM,
            "borrower reports difficulty repaying",
            RecommendedAction.REPAYMENT_PLAN,
        ),
    ),
    (
        lambda v: v.outcome == VisitOutcome.BORROWER_UNREACHABLE,
        AlertDraft(
            "borrower_unreachable",
            Category.CONTACT,
            Severity.MEDIUM,
            "borrower could not be reached for the visit",
            RecommendedAction.FIELD_VISIT,
        ),
    ),
    (
        lambda v: v.outcome == VisitOutcome.REFUSED,
        AlertDraft(
            "visit_refused",
            Category.CONTACT,
            Severity.MEDIUM,
            "borrower refused the visit",
            RecommendedAction.FIELD_VISIT,
        ),
    ),
)


def visit_alerts(visit: VisitCompleted, agreed_usage: AgreedUsage | None) -> list[AlertDraft]:
    """Every bad sign a visit found, one alert each.

    `agreed_usage` is the loan's contractual usage as the scheduler registered it; None
    when it is not known, and then only the misuse rule is skipped.
    """
    drafts: list[AlertDraft] = []
    usage = visit.findings.vehicle_usage
    # Two vocabularies (what was agreed, what was seen) that share their values.
    if (
        agreed_usage is not None
        and usage != VehicleUsage.UNKNOWN
        and usage.value != agreed_usage.value
    ):
        drafts.append(
            AlertDraft(
                "vehicle_misuse",
                Category.VEHICLE,
                Severity.HIGH,
                f"vehicle used as {usage}; the loan agreed {agreed_usage} use",
                RecommendedAction.FIELD_VISIT,
            )
        )
    drafts += [draft for applies, draft in _VISIT_RULES if applies(visit)]
    return drafts
