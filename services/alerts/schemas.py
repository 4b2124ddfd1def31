"""Request and response bodies of the alerts API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from services.alerts.models import ResolutionAction
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
