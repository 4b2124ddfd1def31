"""Visits tables, all in the `visits` schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Index,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from services.visits.evidence_types import ALLOWED_TYPES, EvidenceKind
from services.visits.schemas import ReportKind
from shared.db import schema_metadata, utcnow
from shared.health import health_tables
from shared.outbox import outbox_table
from shared.vocabulary import (
    EmploymentStatus,
    IncomeChange,
    VehicleCondition,
    VehicleUsage,
    VisitMethod,
    VisitOutcome,
    check_in,
)

SCHEMA = "visits"
metadata = schema_metadata(SCHEMA)


class VisitsTable(SQLModel, registry=registry(metadata=metadata)):
    pass


Word = TypeVar("Word", bound=StrEnum)


class Vocabulary(TypeDecorator[Word]):
    """A column holding one word of a vocabulary: VARCHAR in PostgreSQL (guarded there by a
    CHECK built from the same enum), the enum member in Python once read back."""

    impl = String
    cache_ok = True

    def __init__(self, words: type[Word], length: int) -> None:
        super().__init__(length)
        self.words = words

    def process_bind_param(self, value: Word | str | None, dialect: Dialect) -> str | None:
        # A word outside the vocabulary fails here, before PostgreSQL's CHECK would.
        return None if value is None else self.words(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> Word | None:
        return None if value is None else self.words(value)


# The findings' vocabulary items, checked inside the JSONB document: an item that is absent
# is NULL there and passes, a word outside the vocabulary does not.
_FINDINGS_VOCABULARY: tuple[tuple[str, type[StrEnum]], ...] = (
    ("employment_status", EmploymentStatus),
    ("income_change", IncomeChange),
    ("vehicle_usage", VehicleUsage),
    ("vehicle_condition", VehicleCondition),
)
VISIT_CHECKS: dict[str, str] = {
    "method": check_in("method", VisitMethod),
    "outcome": check_in("outcome", VisitOutcome),
    **{
        f"findings_{item}": check_in(f"(findings ->> '{item}')", words)
        for item, words in _FINDINGS_VOCABULARY
    },
}
REPORT_CHECKS: dict[str, str] = {"kind": check_in("kind", ReportKind)}
EVIDENCE_CHECKS: dict[str, str] = {
    "kind": check_in("kind", EvidenceKind),
    "content_type": "content_type IN ({})".format(", ".join(f"'{t}'" for t in ALLOWED_TYPES)),
    "size_bytes": "size_bytes > 0",
    "sha256": "sha256 ~ '^[0-9a-f]{64}$'",
}


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
        Index("ix_visits_region_created", "region", "created_at", "visit_id"),
        *(CheckConstraint(sql, name=name) for name, sql in VISIT_CHECKS.items()),
    )

    visit_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    agent_id: str = Field(max_length=64)
    idempotency_key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    task_id: uuid.UUID | None = None
    loan_id: str = Field(max_length=64)
    method: VisitMethod = Field(sa_column=Column(Vocabulary(VisitMethod, 16), nullable=False))
    outcome: VisitOutcome = Field(sa_column=Column(Vocabulary(VisitOutcome, 32), nullable=False))
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
    # The loan's region when the visit was recorded, as the scheduler told it: what a
    # supervisor's reads are narrowed by. NULL on visits recorded before migration 0006,
    # which only ops and admin read.
    region: str | None = Field(default=None, max_length=64)


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
    # Which canonical form `payload_hash` was computed over (chain.FORMATS): 1 before
    # evidence, 2 with the loan's region and the attached evidence's hashes.
    format: int = Field(
        default=1, sa_column=Column(SmallInteger, nullable=False, server_default=text("1"))
    )
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
        *(CheckConstraint(sql, name=name) for name, sql in REPORT_CHECKS.items()),
    )

    visit_id: uuid.UUID = Field(primary_key=True, foreign_key="visits.visits.visit_id")
    partner: str = Field(max_length=64)
    report_id: str = Field(max_length=64)
    kind: ReportKind = Field(sa_column=Column(Vocabulary(ReportKind, 32), nullable=False))
    loan_id: str = Field(max_length=64)
    observed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    details: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    received_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class Evidence(VisitsTable, table=True):
    """A photo or document scan an agent uploaded: its metadata; the bytes are in the
    evidence store under `sha256` (services/visits/evidence_store.py).

    One per (uploader, bytes): the same agent uploading the same file again gets this row
    back. `visit_id` is NULL until a visit references it, then set once, in that visit's
    transaction; the visit's chain entry commits to `sha256`.
    """

    __tablename__ = "evidence"
    __table_args__ = (
        UniqueConstraint("uploaded_by", "sha256", name="uq_evidence_uploader_sha256"),
        Index("ix_evidence_visit", "visit_id", postgresql_where=text("visit_id IS NOT NULL")),
        *(CheckConstraint(sql, name=name) for name, sql in EVIDENCE_CHECKS.items()),
    )

    evidence_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    uploaded_by: str = Field(max_length=64)
    kind: EvidenceKind = Field(sa_column=Column(Vocabulary(EvidenceKind, 16), nullable=False))
    content_type: str = Field(max_length=64)
    size_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    visit_id: uuid.UUID | None = Field(default=None, foreign_key="visits.visits.visit_id")


outbox = outbox_table(metadata)
# Worker heartbeats, broker positions and losses, read by /readyz (shared/health.py).
health = health_tables(metadata)
