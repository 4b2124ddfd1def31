from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from shared.vocabulary import (
    AgreedUsage,
    Category,
    CreditGrade,
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

# Money travels as a decimal string in CNY, never as a float.
Money = Annotated[
    Decimal, Field(ge=0, max_digits=18, decimal_places=2), PlainSerializer(str, return_type=str)
]

# A ratio such as loan-to-value, as a decimal string to four places.
Ratio = Annotated[
    Decimal, Field(ge=0, max_digits=12, decimal_places=4), PlainSerializer(str, return_type=str)
]

# Every number and date of the contract is bounded, so that both consumers of a topic
# accept or refuse the same event: an unbounded value once passed one consumer and broke
# the other's date arithmetic (year 9999) or inflated an alert (days past due of 10**12).
EARLIEST_DATE: Final = date(2000, 1, 1)
LATEST_DATE: Final = date(2099, 12, 31)
# How far a producer's clock may run ahead of ours before its times are not believed.
CLOCK_SKEW: Final = timedelta(days=1)
_CLOCK_SKEW_SECONDS: Final = CLOCK_SKEW.total_seconds()
# No car loan runs longer than ten years; a loan cannot be 30 years past due.
MAX_DAYS_PAST_DUE: Final = 10_000
MAX_INSTALLMENTS: Final = 600


def _business_date(value: date) -> date:
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise ValueError(f"must be between {EARLIEST_DATE} and {LATEST_DATE}")
    return value


def _event_time(value: datetime) -> datetime:
    if value.date() < EARLIEST_DATE:
        raise ValueError(f"must not be before {EARLIEST_DATE}")
    # Seconds since the epoch: every event time is checked, and building an aware `now`
    # for each cost a worker a twentieth of its CPU.
    if value.timestamp() > time.time() + _CLOCK_SKEW_SECONDS:
        raise ValueError("must not be in the future")
    return value


BusinessDate = Annotated[date, AfterValidator(_business_date)]
EventTime = Annotated[AwareDatetime, AfterValidator(_event_time)]
# Ids as the REST APIs accept them: printable, no NUL, no spaces, bounded.
EntityId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
RuleCode = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]

# The vocabulary is shared with tables, REST schemas, policy and rules (shared.vocabulary).


def _now() -> datetime:
    return datetime.now(UTC)


class EventEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_type: str
    schema_version: int = Field(default=1, ge=1, le=1000)
    occurred_at: EventTime = Field(default_factory=_now)
    loan_id: EntityId


class RepaymentPosted(EventEnvelope):
    event_type: Literal["repayment-posted"] = "repayment-posted"
    installment_no: int = Field(ge=1, le=MAX_INSTALLMENTS)
    due_date: BusinessDate
    amount_due: Money
    amount_paid: Money
    paid_at: EventTime | None = None
    status: RepaymentStatus
    days_past_due: int = Field(ge=0, le=MAX_DAYS_PAST_DUE)
    outstanding_principal: Money


class VisitFindings(BaseModel):
    """The four key items every visit verifies: identity, employment and income, the car, the
    collateral documents."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    identity_verified: bool | None = None
    employment_status: EmploymentStatus = EmploymentStatus.UNKNOWN
    income_change: IncomeChange = IncomeChange.UNKNOWN
    vehicle_sighted: bool | None = None
    vehicle_usage: VehicleUsage = VehicleUsage.UNKNOWN
    vehicle_condition: VehicleCondition = VehicleCondition.UNKNOWN
    collateral_documents_intact: bool | None = None
    encumbrance_detected: bool = False
    repayment_difficulty: bool = False


class VisitCompleted(EventEnvelope):
    event_type: Literal["visit-completed"] = "visit-completed"
    visit_id: uuid.UUID
    task_id: uuid.UUID | None = None
    agent_id: EntityId
    method: VisitMethod
    outcome: VisitOutcome
    started_at: EventTime
    ended_at: EventTime
    findings: VisitFindings

    @model_validator(mode="after")
    def _ended_after_start(self) -> VisitCompleted:
        if self.ended_at < self.started_at:
            raise ValueError("ended_at must not be before started_at")
        return self


class AlertRaised(EventEnvelope):
    event_type: Literal["alert-raised"] = "alert-raised"
    alert_id: uuid.UUID
    rule: RuleCode
    category: Category
    severity: Severity
    reason: str = Field(min_length=1, max_length=2000, pattern=r"^[^\x00]*$")
    source_event_id: uuid.UUID
    recommended_action: RecommendedAction


class LoanRegistered(EventEnvelope):
    """The facts of a loan that other services keep a projection of: published by the
    scheduler when a loan is registered or its facts change; the latest `occurred_at` per
    loan wins. Never PII: no name, national id or phone."""

    event_type: Literal["loan-registered"] = "loan-registered"
    region: EntityId
    credit_grade: CreditGrade
    agreed_usage: AgreedUsage
    principal: Money
    term_months: int = Field(ge=1, le=MAX_INSTALLMENTS)
    disbursed_on: BusinessDate
    valuation: Money
    # principal / valuation, to four places; None when the car has no valuation.
    ltv: Ratio | None = None


class PlanInstallment(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    due_on: BusinessDate
    amount: Money


class RepaymentPlanApproved(EventEnvelope):
    """A repayment plan the risk desk agreed with a borrower and a second person approved
    (alerts service): the scheduler plans the follow-up calls around its due dates."""

    event_type: Literal["repayment-plan-approved"] = "repayment-plan-approved"
    plan_id: uuid.UUID
    alert_id: uuid.UUID
    # The arrears the plan covers and its total, decimal strings in CNY.
    arrears: Money
    total: Money
    installments: list[PlanInstallment] = Field(min_length=1, max_length=MAX_INSTALLMENTS)


Event = RepaymentPosted | VisitCompleted | AlertRaised | LoanRegistered | RepaymentPlanApproved
