"""Event contract of the Kafka topics (design.md, "Event contract").

Producers build these models and consumers validate against the same models, so a field
renamed on one side fails a test instead of a night's postings. Unknown fields are ignored
(forward compatibility); missing or mistyped fields are invalid and go to `<topic>.dlq`.
"""

from shared.events.models import (
    AlertRaised,
    Category,
    EmploymentStatus,
    Event,
    EventEnvelope,
    IncomeChange,
    RecommendedAction,
    RepaymentPosted,
    RepaymentStatus,
    Severity,
    VehicleCondition,
    VehicleUsage,
    VisitCompleted,
    VisitFindings,
    VisitMethod,
    VisitOutcome,
)
from shared.events.topics import (
    ALERT_RAISED,
    ALL_TOPICS,
    EVENT_MODELS,
    REPAYMENT_POSTED,
    VISIT_COMPLETED,
    dlq_topic,
    parse_event,
)

__all__ = [
    "ALERT_RAISED",
    "ALL_TOPICS",
    "EVENT_MODELS",
    "REPAYMENT_POSTED",
    "VISIT_COMPLETED",
    "AlertRaised",
    "Category",
    "EmploymentStatus",
    "Event",
    "EventEnvelope",
    "IncomeChange",
    "RecommendedAction",
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
