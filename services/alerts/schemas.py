"""Request and response bodies of the alerts API."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.alerts.models import LegalStage, PlanStatus, ResolutionAction
from shared.validation import Identifier, MaskedText, Note
from shared.vocabulary import AlertStatus, Category, RecommendedAction, Severity

__all__ = [
    "AlertDetailOut",
    "AlertOut",
    "AlertStatus",
    "AssignIn",
    "HistoryOut",
    "ResolutionAction",
    "ResolveIn",
    "StartIn",
]


class ResolveIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"action": "legal_review", "note": "sent to legal"}]},
    )

    action: ResolutionAction
    # Required to dismiss: the reason it was a false alarm.
    note: Note | None = None


class StartIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"note": "calling the borrower"}]}
    )

    note: Note | None = None


class AssignIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"assignee": "ops-desk-2"}]}
    )

    # The desk user's login (a JWT `sub`), not a person's name.
    assignee: Identifier


class AlertOut(BaseModel):
    alert_id: uuid.UUID
    loan_id: str
    rule: str
    category: Category
    severity: Severity
    status: AlertStatus
    reason: str
    recommended_action: RecommendedAction
    source_event_id: uuid.UUID
    created_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_action: ResolutionAction | None
    # Masked on the way out too: notes stored before masking began are shown masked.
    resolution_note: MaskedText | None
    family: str
    rule_version: int | None
    # The facts that fired the rule (numbers, codes and ids, never PII).
    facts: dict[str, Any]
    occurrences: int
    last_seen_at: datetime
    assignee: str | None
    severity_since: datetime
    # Set when it waited past its acknowledgement deadline (the SLA of its severity).
    supervisor_queue_at: datetime | None
    version: int


class HistoryOut(BaseModel):
    at: datetime
    who: str
    action: str
    from_status: AlertStatus | None
    to_status: AlertStatus
    severity: Severity
    note: MaskedText
    source_event_id: uuid.UUID | None


class AlertDetailOut(AlertOut):
    history: list[HistoryOut]


# --- resolutions as records ---------------------------------------------------------------

PlanAmount = Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=2)]


class PlanInstallmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    due_on: date
    amount: PlanAmount


class RepaymentPlanIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "alert_id": "6f1c1f7e-5a51-4d7e-9d1e-1a2b3c4d5e6f",
                    "installments": [
                        {"due_on": "2026-12-15", "amount": "1500.00"},
                        {"due_on": "2027-01-15", "amount": "1500.00"},
                    ],
                    "note": "borrower back at work from December",
                }
            ]
        },
    )

    alert_id: uuid.UUID
    installments: list[PlanInstallmentIn] = Field(min_length=1, max_length=60)
    note: Note | None = None

    @model_validator(mode="after")
    def _dates_in_order(self) -> RepaymentPlanIn:
        days = [i.due_on for i in self.installments]
        if days != sorted(set(days)):
            raise ValueError("installments must fall on distinct dates, in order")
        return self


class RepaymentPlanOut(BaseModel):
    plan_id: uuid.UUID
    alert_id: uuid.UUID
    loan_id: str
    status: PlanStatus
    arrears: Decimal
    total: Decimal
    installments: list[PlanInstallmentIn]
    note: MaskedText | None
    proposed_by: str
    proposed_at: datetime
    approved_by: str | None
    approved_at: datetime | None


class LegalCaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alert_id: uuid.UUID
    note: Note | None = None


class AdvanceIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"to": "filed", "note": "court 3"}]}
    )

    to: LegalStage
    note: Note | None = None


class LegalStepOut(BaseModel):
    stage: LegalStage
    at: datetime
    who: str
    note: MaskedText | None


class LegalCaseOut(BaseModel):
    case_id: uuid.UUID
    alert_id: uuid.UUID
    loan_id: str
    stage: LegalStage
    stages: list[LegalStepOut]
    opened_by: str
    opened_at: datetime
    updated_at: datetime


class AlertSummaryOut(BaseModel):
    total: int
    by_rule: dict[str, int]
    by_severity: dict[str, int]
    by_status: dict[str, int]
