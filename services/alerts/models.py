"""Alerts tables, all in the `alerts` schema."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Column, DateTime, Index, Text, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.db import schema_metadata, utcnow
from shared.health import health_tables
from shared.inbox import inbox_table
from shared.outbox import outbox_table

SCHEMA = "alerts"
metadata = schema_metadata(SCHEMA)


class AlertsTable(SQLModel, registry=registry(metadata=metadata)):
    pass


class Alert(AlertsTable, table=True):
    """A risk warning on one loan, raised by a rule from a repayment posting or a visit,
    and worked by operations from open to acknowledged to resolved (or dismissed)."""

    __tablename__ = "alerts"
    __table_args__ = (
        # The rules are deterministic, so one source event raises each rule at most once;
        # this holds even if the inbox were bypassed (e.g. a replay from the DLQ).
        UniqueConstraint("source_event_id", "rule", name="uq_alerts_source_event_rule"),
        Index("ix_alerts_created", "created_at", "alert_id"),
        Index("ix_alerts_loan_created", "loan_id", "created_at"),
        Index("ix_alerts_status_severity_created", "status", "severity", "created_at"),
        CheckConstraint(
            "category IN ('repayment', 'vehicle', 'collateral', 'borrower', 'contact')",
            name="category",
        ),
        CheckConstraint("severity IN ('low', 'medium', 'high', 'critical')", name="severity"),
        CheckConstraint(
            "status IN ('open', 'acknowledged', 'resolved', 'dismissed')", name="status"
        ),
    )

    alert_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    loan_id: str = Field(max_length=64)
    rule: str = Field(max_length=64)
    category: str = Field(max_length=16)
    severity: str = Field(max_length=16)
    status: str = Field(default="open", max_length=16)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    recommended_action: str = Field(max_length=32)
    source_event_id: uuid.UUID
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    acknowledged_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    acknowledged_by: str | None = Field(default=None, max_length=128)
    resolved_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    resolved_by: str | None = Field(default=None, max_length=128)
    resolution_action: str | None = Field(default=None, max_length=32)
    resolution_note: str | None = Field(default=None, max_length=2000)


inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
# Worker heartbeats, broker positions and losses, read by /readyz (shared/health.py).
health = health_tables(metadata)
