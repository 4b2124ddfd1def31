"""Request and response bodies of the alerts API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.events import Category, RecommendedAction, Severity
from shared.validation import MaskedText, Note

AlertStatus = Literal["open", "acknowledged", "resolved", "dismissed"]
# What operations did about an alert; `dismiss` closes it as a false alarm.
ResolutionAction = Literal[
    "repayment_plan",
    "legal_review",
    "repossession_review",
    "field_visit",
    "phone_visit",
    "no_action",
    "dismiss",
]


class ResolveIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"action": "legal_review", "note": "sent to legal"}]},
    )

    action: ResolutionAction
    note: Note | None = None


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
