from __future__ import annotations

from typing import Final

from shared.events.models import (
    AlertRaised,
    EventEnvelope,
    LoanRegistered,
    RepaymentPlanApproved,
    RepaymentPosted,
    VisitCompleted,
)

REPAYMENT_POSTED: Final = "repayment-posted"
VISIT_COMPLETED: Final = "visit-completed"
ALERT_RAISED: Final = "alert-raised"
LOAN_REGISTERED: Final = "loan-registered"
REPAYMENT_PLAN_APPROVED: Final = "repayment-plan-approved"

EVENT_MODELS: Final[dict[str, type[EventEnvelope]]] = {
    REPAYMENT_POSTED: RepaymentPosted,
    VISIT_COMPLETED: VisitCompleted,
    ALERT_RAISED: AlertRaised,
    LOAN_REGISTERED: LoanRegistered,
    REPAYMENT_PLAN_APPROVED: RepaymentPlanApproved,
}


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


ALL_TOPICS: Final[tuple[str, ...]] = tuple(
    name for topic in EVENT_MODELS for name in (topic, dlq_topic(topic))
)


def parse_event(topic: str, payload: bytes) -> EventEnvelope:
    """Validate a raw Kafka value against its topic's model.

    Raises pydantic.ValidationError (or ValueError for bad JSON / a foreign event_type),
    which the consumer turns into a dead-letter record with the reason.
    """
    return EVENT_MODELS[topic].model_validate_json(payload)
