from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

# Money travels as a decimal string in CNY, never as a float.
Money = Annotated[
    Decimal, Field(ge=0, max_digits=18, decimal_places=2), PlainSerializer(str, return_type=str)
]

RepaymentStatus = Literal["paid", "partial", "missed", "reversed"]
VisitMethod = Literal["phone", "field", "third_party"]
VisitOutcome = Literal["completed", "borrower_unreachable", "refused"]
EmploymentStatus = Literal["stable", "changed", "unemployed", "unknown"]
IncomeChange = Literal["same", "increased", "decreased", "unknown"]
VehicleUsage = Literal["private", "commercial", "ride_hailing", "lent_out", "unknown"]
VehicleCondition = Literal["good", "damaged", "missing", "unknown"]
Category = Literal["repayment", "vehicle", "collateral", "borrower", "contact"]
Severity = Literal["low", "medium", "high", "critical"]
RecommendedAction = Literal[
    "phone_visit", "field_visit", "repayment_plan", "legal_review", "repossession_review"
]


def _now() -> datetime:
    return datetime.now(UTC)


class EventEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_type: str
    schema_version: int = Field(default=1, ge=1)
    occurred_at: AwareDatetime = Field(default_factory=_now)
    loan_id: str = Field(min_length=1, max_length=64)


class RepaymentPosted(EventEnvelope):
    event_type: Literal["repayment-posted"] = "repayment-posted"
    installment_no: int = Field(ge=1)
    due_date: date
    amount_due: Money
    amount_paid: Money
    paid_at: AwareDatetime | None = None
    status: RepaymentStatus
    days_past_due: int = Field(ge=0)
    outstanding_principal: Money


class VisitFindings(BaseModel):
    """The four key items every visit verifies (design.md, process step 3)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    identity_verified: bool | None = None
    employment_status: EmploymentStatus = "unknown"
    income_change: IncomeChange = "unknown"
    vehicle_sighted: bool | None = None
    vehicle_usage: VehicleUsage = "unknown"
    vehicle_condition: VehicleCondition = "unknown"
    collateral_documents_intact: bool | None = None
    encumbrance_detected: bool = False
    repayment_difficulty: bool = False


class VisitCompleted(EventEnvelope):
    event_type: Literal["visit-completed"] = "visit-completed"
    visit_id: uuid.UUID
    task_id: uuid.UUID | None = None
    agent_id: str
    method: VisitMethod
    outcome: VisitOutcome
    started_at: AwareDatetime
    ended_at: AwareDatetime
    findings: VisitFindings


class AlertRaised(EventEnvelope):
    event_type: Literal["alert-raised"] = "alert-raised"
    alert_id: uuid.UUID
    rule: str
    category: Category
    severity: Severity
    reason: str
    source_event_id: uuid.UUID
    recommended_action: RecommendedAction


Event = RepaymentPosted | VisitCompleted | AlertRaised
