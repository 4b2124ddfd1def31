"""Event contract of the Kafka topics (design.md, "Event contract").

Producers build these models and consumers validate against the same models, so a field
renamed on one side fails a test instead of a night's postings. Unknown fields are ignored
(forward compatibility); missing or mistyped fields are invalid and go to `<topic>.dlq`.
"""

from shared.events.models import (
    AlertRaised,
    Event,
    EventEnvelope,
    LoanRegistered,
    PlanInstallment,
    RepaymentPlanApproved,
    RepaymentPosted,
    VisitCompleted,
    VisitFindings,
)
from shared.events.topics import (
    ALERT_RAISED,
    ALL_TOPICS,
    EVENT_MODELS,
    LOAN_REGISTERED,
    REPAYMENT_PLAN_APPROVED,
    REPAYMENT_POSTED,
    VISIT_COMPLETED,
    dlq_topic,
    parse_event,
)
from shared.vocabulary import (
    Category,
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

__all__ = [
    "ALERT_RAISED",
    "ALL_TOPICS",
    "EVENT_MODELS",
    "LOAN_REGISTERED",
    "REPAYMENT_PLAN_APPROVED",
    "REPAYMENT_POSTED",
    "VISIT_COMPLETED",
    "AlertRaised",
    "Category",
    "EmploymentStatus",
    "Event",
    "EventEnvelope",
    "IncomeChange",
    "LoanRegistered",
    "PlanInstallment",
    "RecommendedAction",
    "RepaymentPlanApproved",
    "RepaymentPosted",
    "RepaymentStatus",
    "Severity",
    "VehicleCondition",
    "VehicleUsage",
    "VisitCompleted",
    "VisitFindings",
    "VisitMethod",
    "VisitOutcome",
    "dlq_topic",
    "parse_event",
]
