"""Request and response bodies of the alerts API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from services.alerts.models import ResolutionAction
from shared.validation import MaskedText, Note
from shared.vocabulary import AlertStatus, Category, RecommendedAction, Severity

__all__ = ["AlertOut", "AlertStatus", "ResolutionAction", "ResolveIn"]


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
    family: str
    rule_version: int | None
    # The facts that fired the rule (numbers, codes and ids, never PII).
    facts: dict[str, Any]
    occurrences: int
    last_seen_at: datetime
    assignee: str | None
