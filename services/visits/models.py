"""Visits tables, all in the `visits` schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.db import schema_metadata, utcnow
from shared.health import health_tables
from shared.outbox import outbox_table

SCHEMA = "visits"
metadata = schema_metadata(SCHEMA)


class VisitsTable(SQLModel, registry=registry(metadata=metadata)):
    pass


class Visit(VisitsTable, table=True):
    """A visit an agent recorded: what was found, how, where and when.

    `idempotency_key` and `request_hash` let a mobile client retry a capture safely:
    the key is scoped per agent, the hash tells a true retry from a reused key.
    """

    __tablename__ = "visits"
    __table_args__ = (
        UniqueConstraint("agent_id", "idempotency_key", name="uq_visits_agent_idempotency_key"),
        # A task is done by one visit; a second capture for it is a conflict, even while
        # the scheduler has not yet consumed the first visit-completed event.
        Index(
            "uq_visits_task",
            "task_id",
            unique=True,
            postgresql_where=text("task_id IS NOT NULL"),
        ),
        Index("ix_visits_loan_created", "loan_id", "created_at", "visit_id"),
        Index("ix_visits_agent_created", "agent_id", "created_at", "visit_id"),
        Index("ix_visits_created", "created_at", "visit_id"),
    )

    visit_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    agent_id: str = Field(max_length=64)
    idempotency_key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    task_id: uuid.UUID | None = None
    loan_id: str = Field(max_length=64)
    method: str = Field(max_length=16)
    outcome: str = Field(max_length=32)
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    ended_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    findings: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    geo_lat: float | None = None
    geo_lon: float | None = None
    # Free text that may name people or places: stored, returned to readers, never logged.
    notes: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class VisitChainEntry(VisitsTable, table=True):
    """A visit's entry in its loan's tamper-evident chain (services/visits/chain.py).

    Written in the visit's own transaction and never updated; `(loan_id, seq)` is unique,
    so even a writer that skipped the per-loan lock could not fork a chain.
    """

    __tablename__ = "visit_chain"
    __table_args__ = (UniqueConstraint("loan_id", "seq", name="uq_visit_chain_loan_seq"),)

    visit_id: uuid.UUID = Field(primary_key=True, foreign_key="visits.visits.visit_id")
    loan_id: str = Field(max_length=64)
    seq: int
    prev_hash: str = Field(max_length=64)
    payload_hash: str = Field(max_length=64)
    entry_hash: str = Field(max_length=64)
    chained_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ThirdPartyReport(VisitsTable, table=True):
    """A partner's report as it arrived, beside the visit it became (same `visit_id`).

    Unique per (partner, report_id): a partner resending a report records nothing new. The
    visit row carries the same pair (agent_id, idempotency_key), which is what a concurrent
    resend collides on first.
    """

    __tablename__ = "third_party_reports"
    __table_args__ = (
        UniqueConstraint("partner", "report_id", name="uq_third_party_reports_partner_report"),
        Index("ix_third_party_reports_loan_observed", "loan_id", "observed_at"),
    )

    visit_id: uuid.UUID = Field(primary_key=True, foreign_key="visits.visits.visit_id")
    partner: str = Field(max_length=64)
    report_id: str = Field(max_length=64)
    kind: str = Field(max_length=32)
    loan_id: str = Field(max_length=64)
    observed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    details: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    received_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


outbox = outbox_table(metadata)
# Worker heartbeats, broker positions and losses, read by /readyz (shared/health.py).
health = health_tables(metadata)
