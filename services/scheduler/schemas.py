"""Request and response bodies of the scheduler API."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.pagination import CursorText
from shared.validation import (
    BusinessDate,
    Flag,
    Identifier,
    LoanId,
    Money,
    NationalId,
    Note,
    Phone,
    Ratio,
    SingleLineText,
)
from shared.vocabulary import AgreedUsage, CreditGrade, RepaymentStatus, TaskStatus, VisitMethod

Weekday = Annotated[int, Field(ge=1, le=7)]
# The vocabulary is shared with the tables, the events and the policy (shared.vocabulary).
Method = VisitMethod


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BorrowerIn(Strict):
    borrower_id: Identifier
    name: SingleLineText = Field(min_length=1, max_length=128)
    national_id: NationalId
    phone: Phone
    occupation: SingleLineText = Field(min_length=1, max_length=128)
    monthly_income: Money


class VehicleIn(Strict):
    vin: str = Field(pattern=r"^[A-HJ-NPR-Z0-9]{17}$")
    plate: SingleLineText = Field(min_length=1, max_length=16)
    make_model: SingleLineText = Field(min_length=1, max_length=128)
    valuation: Money
    valued_on: BusinessDate


_LOAN_EXAMPLE: dict[str, Any] = {
    "borrower": {
        "borrower_id": "B-1",
        "name": "王建国",
        "national_id": "110101199003074512",
        "phone": "13812345678",
        "occupation": "driver",
        "monthly_income": "12000.00",
    },
    "vehicle": {
        "vin": "LSVAU2180N2183294",
        "plate": "沪A12345",
        "make_model": "BYD Qin",
        "valuation": "98000.00",
        "valued_on": "2026-10-10",
    },
    "credit_grade": "D",
    "principal": "80000.00",
    "term_months": 36,
    "disbursed_on": "2026-11-01",
    "region": "SH",
    "agreed_usage": "private",
}


class LoanIn(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [_LOAN_EXAMPLE]})

    borrower: BorrowerIn
    vehicle: VehicleIn
    credit_grade: CreditGrade
    principal: Annotated[Money, Field(gt=0)]
    term_months: int = Field(ge=1, le=120)
    disbursed_on: BusinessDate
    region: Identifier
    agreed_usage: AgreedUsage = AgreedUsage.PRIVATE


class LoanImportLine(LoanIn):
    model_config = ConfigDict(json_schema_extra={"examples": [{"loan_id": "L-1", **_LOAN_EXAMPLE}]})

    loan_id: LoanId


class BorrowerOut(BaseModel):
    borrower_id: str
    name: str
    national_id: str
    phone: str
    occupation: str
    monthly_income: Money


class VehicleOut(BaseModel):
    vin: str
    plate: str
    make_model: str
    valuation: Money
    valued_on: date
    ltv: Ratio | None


class LoanOut(BaseModel):
    loan_id: str
    borrower: BorrowerOut
    vehicle: VehicleOut
    credit_grade: CreditGrade
    principal: Money
    term_months: int
    disbursed_on: date
    region: str
    agreed_usage: AgreedUsage
    days_past_due: int
    last_repayment_status: RepaymentStatus | None


class AgentIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "陈磊",
                    "region": "SH",
                    "methods": ["phone", "field"],
                    "daily_capacity": 10,
                }
            ]
        }
    )

    name: SingleLineText = Field(min_length=1, max_length=128)
    region: Identifier
    methods: list[Method] = Field(min_length=1)
    daily_capacity: int = Field(ge=1, le=200)
    active: Flag = True
    working_days: list[Weekday] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6, 7],
        min_length=1,
        max_length=7,
        description="ISO weekdays worked: 1 Monday .. 7 Sunday.",
    )

    @field_validator("methods")
    @classmethod
    def _people_do_no_third_party_checks(cls, methods: list[Method]) -> list[Method]:
        # Third-party checks are done by partners' reports, never by a person.
        if Method.THIRD_PARTY in methods:
            raise ValueError("third_party checks are done by partners, not agents")
        return methods

    @field_validator("working_days")
    @classmethod
    def _distinct_days(cls, days: list[int]) -> list[int]:
        if len(set(days)) != len(days):
            raise ValueError("each working day once")
        return sorted(days)


class AgentOut(AgentIn):
    agent_id: str


class Absence(Strict):
    starts_on: BusinessDate
    ends_on: BusinessDate

    @model_validator(mode="after")
    def _ordered(self) -> Absence:
        if self.ends_on < self.starts_on:
            raise ValueError("ends_on is before starts_on")
        return self


class AbsencesIn(Strict):
    """The agent's absences, replacing those it had (an empty list: none)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"absences": [{"starts_on": "2027-01-04", "ends_on": "2027-01-08"}]}]
        }
    )

    absences: list[Absence] = Field(max_length=366)

    @model_validator(mode="after")
    def _apart(self) -> AbsencesIn:
        spans = sorted((a.starts_on, a.ends_on) for a in self.absences)
        if any(later[0] <= earlier[1] for earlier, later in pairwise(spans)):
            raise ValueError("absences overlap")
        return self


class AbsencesOut(AbsencesIn):
    agent_id: str
    released_tasks: int = Field(description="Open tasks of those days sent back to dispatch.")


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
    overdue: bool = Field(default=False, description="Open and past its due date.")


class TaskQuery(BaseModel):
    """Filters of the task lists (query parameters)."""

    agent_id: Identifier | None = None
    loan_id: Identifier | None = None
    status: TaskStatus | None = None
    due_from: BusinessDate | None = None
    due_to: BusinessDate | None = None
    region: Identifier | None = None
    # `due`: soonest first, so overdue and today's tasks lead (an agent's default);
    # `created`: oldest first (everyone else's default).
    order: Literal["due", "created"] | None = None
    cursor: CursorText | None = None
    limit: int = Field(default=50, ge=1, le=200)


class RescheduleIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"due_on": "2027-01-05", "note": "borrower travelling"}]}
    )

    due_on: BusinessDate
    agent_id: Identifier | None = None
    note: Note | None = Field(default=None, max_length=500)


class RejectedLine(BaseModel):
    """A line of an import that was not registered, and why."""

    line: int = Field(description="Line number in the body, from 1; blank lines counted.")
    field: str | None = Field(
        description="The first field at fault (`borrower.phone`), if the line parsed as JSON."
    )
    reason: str


# An import response lists this many rejected lines and counts them all.
LISTED_REJECTIONS = 1000


class ImportResult(BaseModel):
    """What an import did. Good lines are registered and bad lines are not."""

    accepted: int = Field(description="Lines registered: created + updated + unchanged.")
    created: int = Field(description="New loans (each with its first follow-up task).")
    updated: int = Field(description="Loans whose registration changed.")
    unchanged: int = Field(description="Loans registered exactly so already: nothing written.")
    rejected: int = Field(description="All rejected lines, whether listed or not.")
    rejected_lines: list[RejectedLine] = Field(
        max_length=LISTED_REJECTIONS,
        description=f"The first {LISTED_REJECTIONS} rejected lines, in line order.",
    )
