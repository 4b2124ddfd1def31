"""Request and response bodies of the scheduler API."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CreditGrade = Literal["A", "B", "C", "D", "E"]
AgreedUsage = Literal["private", "commercial", "ride_hailing"]
Method = Literal["phone", "field", "third_party"]
TaskStatus = Literal["open", "completed", "cancelled"]
Amount = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BorrowerIn(Strict):
    borrower_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=128)
    national_id: str = Field(pattern=r"^\d{17}[\dX]$", description="18-character resident id")
    phone: str = Field(pattern=r"^\+?\d{7,15}$")
    occupation: str = Field(min_length=1, max_length=128)
    monthly_income: Amount


class VehicleIn(Strict):
    vin: str = Field(pattern=r"^[A-HJ-NPR-Z0-9]{17}$")
    plate: str = Field(min_length=1, max_length=16)
    make_model: str = Field(min_length=1, max_length=128)
    valuation: Amount
    valued_on: date


class LoanIn(Strict):
    borrower: BorrowerIn
    vehicle: VehicleIn
    credit_grade: CreditGrade
    principal: Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=2)]
    term_months: int = Field(ge=1, le=120)
    disbursed_on: date
    region: str = Field(min_length=1, max_length=64)
    agreed_usage: AgreedUsage = "private"


class LoanImportLine(LoanIn):
    loan_id: str = Field(min_length=1, max_length=64)


class BorrowerOut(BaseModel):
    borrower_id: str
    name: str
    national_id: str
    phone: str
    occupation: str
    monthly_income: Decimal


class VehicleOut(BaseModel):
    vin: str
    plate: str
    make_model: str
    valuation: Decimal
    valued_on: date
    ltv: Decimal | None


class LoanOut(BaseModel):
    loan_id: str
    borrower: BorrowerOut
    vehicle: VehicleOut
    credit_grade: CreditGrade
    principal: Decimal
    term_months: int
    disbursed_on: date
    region: str
    agreed_usage: AgreedUsage
    days_past_due: int
    last_repayment_status: str | None


class AgentIn(Strict):
    name: str = Field(min_length=1, max_length=128)
    region: str = Field(min_length=1, max_length=64)
    methods: list[Method] = Field(min_length=1)
    daily_capacity: int = Field(ge=1, le=200)
    active: bool = True


class AgentOut(AgentIn):
    agent_id: str


class TaskOut(BaseModel):
    task_id: uuid.UUID
    loan_id: str
    method: Method
    due_on: date
    status: TaskStatus
    agent_id: str | None
    reason: dict[str, Any]
    visit_id: uuid.UUID | None
    created_at: datetime
    completed_at: datetime | None


class TaskQuery(BaseModel):
    """Filters of the task lists (query parameters)."""

    agent_id: str | None = None
    loan_id: str | None = None
    status: TaskStatus | None = None
    due_from: date | None = None
    due_to: date | None = None
    cursor: str | None = None
    limit: int = Field(default=50, ge=1, le=200)


class RescheduleIn(Strict):
    due_on: date
    agent_id: str | None = None
    note: str | None = Field(default=None, max_length=500)


class ImportResult(BaseModel):
    imported: int
    created: int
