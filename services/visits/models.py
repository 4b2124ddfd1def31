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
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from services.visits.evidence_types import ALLOWED_TYPES, EvidenceKind
from services.visits.schemas import ReportKind, ReviewDecision, ReviewState
from shared.db import schema_metadata, utcnow
from shared.health import health_tables
from shared.inbox import inbox_table
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
VISIT_CHECKS["review_state"] = check_in("review_state", ReviewState)
# A first version corrects nothing; every later one corrects its predecessor.
VERSION_CHECK = "version >= 1 AND (version = 1) = (corrects_visit_id IS NULL)"
REPORT_CHECKS: dict[str, str] = {"kind": check_in("kind", ReportKind)}
REVIEW_CHECKS: dict[str, str] = {"decision": check_in("decision", ReviewDecision)}
# A returned visit says why: its agent has to know what to correct.
REASON_CHECK = "decision = 'approve' OR reason IS NOT NULL"
EVIDENCE_CHECKS: dict[str, str] = {
    "kind": check_in("kind", EvidenceKind),
    "content_type": "content_type IN ({})".format(", ".join(f"'{t}'" for t in ALLOWED_TYPES)),
    "size_bytes": "size_bytes > 0",
    "sha256": "sha256 ~ '^[0-9a-f]{64}$'",
}


class Visit(VisitsTable, table=True):
    """A visit an agent recorded: what was found, how, where and when.

    `idempotency_key` and `request_hash` let a mobile client retry a capture safely:
    the key is scoped per agent, the hash tells a true retry from a reused key. The key is
    kept `IDEMPOTENCY_KEY_DAYS` and then cleared by the worker (NULL; the hash stays, it is
    chained); partners' report ids are never cleared.

    A submitted visit is immutable: a correction is another row, the next `version`, whose
    `corrects_visit_id` names the version it corrects (at most one correction per version:
    the versions of a visit are a line, not a tree). `review_state` is where the version
    stands in the supervisor's review; it is the one column that changes, and it is derived
    from chained facts (`visit_reviews`, `corrects_visit_id`), so verification checks it.
    """

    __tablename__ = "visits"
    __table_args__ = (
        UniqueConstraint("agent_id", "idempotency_key", name="uq_visits_agent_idempotency_key"),
        # A task is done by one visit; a second capture for it is a conflict, even while
        # the scheduler has not yet consumed the first visit-completed event.
        # Corrections carry the task of the version they correct, so only first versions
        # count here.
        Index(
            "uq_visits_task",
            "task_id",
            unique=True,
            postgresql_where=text("task_id IS NOT NULL AND corrects_visit_id IS NULL"),
        ),
        UniqueConstraint("corrects_visit_id", name="uq_visits_corrects_visit_id"),
        Index("ix_visits_loan_created", "loan_id", "created_at", "visit_id"),
        Index("ix_visits_agent_created", "agent_id", "created_at", "visit_id"),
        Index("ix_visits_created", "created_at", "visit_id"),
        Index("ix_visits_region_created", "region", "created_at", "visit_id"),
        # A supervisor's review queue: its region's pending versions in the order recorded.
        Index(
            "ix_visits_region_review_created", "region", "review_state", "created_at", "visit_id"
        ),
        *(CheckConstraint(sql, name=name) for name, sql in VISIT_CHECKS.items()),
        CheckConstraint(VERSION_CHECK, name="version"),
    )

    visit_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    agent_id: str = Field(max_length=64)
    idempotency_key: str | None = Field(default=None, max_length=255)
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
    # supervisor's reads are narrowed by. NULL on visits recorded before migration 0006
    # until the worker fills it from `loan-registered` (regions.py); only ops and admin
    # read them meanwhile.
    region: str | None = Field(default=None, max_length=64)
    # The version this one corrects (None for a first version), and its number (1, 2, ...).
    corrects_visit_id: uuid.UUID | None = Field(default=None, foreign_key="visits.visits.visit_id")
    version: int = Field(
        default=1, sa_column=Column(SmallInteger, nullable=False, server_default=text("1"))
    )
    # Evidence of the corrected version this one stands on too (its own uploads are
    # attached by `evidence.visit_id`): a correction need not re-photograph the car.
    carried_evidence: list[uuid.UUID] | None = Field(
        default=None, sa_column=Column(ARRAY(Uuid()), nullable=True)
    )
    review_state: ReviewState = Field(
        default=ReviewState.PENDING,
        sa_column=Column(
            Vocabulary(ReviewState, 16), nullable=False, server_default=text("'pending'")
        ),
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
    # Which canonical form `payload_hash` was computed over (chain.FORMATS): 1 before
    # evidence, 2 with the loan's region and the attached evidence's hashes.
    format: int = Field(
        default=1, sa_column=Column(SmallInteger, nullable=False, server_default=text("1"))
    )
    chained_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ChainHead(VisitsTable, table=True):
    """The last entry of each loan's chain of visits: what the next entry follows.

    A capture appends to its loan's chain with one upsert of this row
    (services/visits/append.py): PostgreSQL locks the row and applies the update to its
    latest committed version, so two captures of a loan at once make one chain without a
    lock of their own or a read of the chain. It holds nothing the chain does not: an
    altered head shows as a break at the next entry (`prev_hash`), which verification finds.
    """

    __tablename__ = "chain_heads"

    loan_id: str = Field(primary_key=True, max_length=64)
    seq: int
    entry_hash: str = Field(max_length=64)
    # The entry before the last one's hash: what the last entry's own `prev_hash` is, so
    # the upsert's RETURNING gives the appended entry whole.
    prev_hash: str = Field(max_length=64)


class LoanRegion(VisitsTable, table=True):
    """Each loan's region as the scheduler last announced it on `loan-registered`: the
    visits worker's own projection (services/visits/regions.py), which fills the region
    of visits recorded before migration 0006 so that their region's supervisors read them.
    The newest announcement wins (`as_of`, the event's `occurred_at`)."""

    __tablename__ = "loan_regions"

    loan_id: str = Field(primary_key=True, max_length=64)
    region: str = Field(max_length=64)
    as_of: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


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


class VisitReview(VisitsTable, table=True):
    """A supervisor's decision on a submitted visit version (maker-checker): append-only,
    one per version, and chained per loan like the visits (services/visits/chain.py,
    `REVIEW_FIELDS`), binding the decision to the reviewed version's own chain entry. So a
    decision altered, removed or inserted with SQL afterwards is found by verification."""

    __tablename__ = "visit_reviews"
    __table_args__ = (
        UniqueConstraint("visit_id", name="uq_visit_reviews_visit_id"),
        UniqueConstraint("loan_id", "seq", name="uq_visit_reviews_loan_seq"),
        *(CheckConstraint(sql, name=name) for name, sql in REVIEW_CHECKS.items()),
        CheckConstraint(REASON_CHECK, name="reason"),
    )

    review_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    visit_id: uuid.UUID = Field(foreign_key="visits.visits.visit_id")
    loan_id: str = Field(max_length=64)
    decision: ReviewDecision = Field(
        sa_column=Column(Vocabulary(ReviewDecision, 16), nullable=False)
    )
    # Free text like notes: stored, shown to the agent and readers, never logged.
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    reviewed_by: str = Field(max_length=64)
    reviewed_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    seq: int
    prev_hash: str = Field(max_length=64)
    payload_hash: str = Field(max_length=64)
    entry_hash: str = Field(max_length=64)


class VisitDraft(VisitsTable, table=True):
    """A visit its agent has begun and not submitted: whatever the app had, unchecked by
    the capture rules, unchained, announced to nobody. Its id is the device's, and becomes
    the visit's on submission (the row is deleted in that transaction). Purged by the
    worker `DRAFT_RETENTION_DAYS` after its last change."""

    __tablename__ = "visit_drafts"
    __table_args__ = (
        Index("ix_visit_drafts_agent_updated", "agent_id", "updated_at", "visit_id"),
        Index("ix_visit_drafts_updated", "updated_at"),
    )

    visit_id: uuid.UUID = Field(primary_key=True)
    agent_id: str = Field(max_length=64)
    loan_id: str | None = Field(default=None, max_length=64)
    body: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


outbox = outbox_table(metadata)
# Events applied by the visits worker's consumer (`loan-registered`).
inbox = inbox_table(metadata)
# Worker heartbeats, broker positions and losses, read by /readyz (shared/health.py).
health = health_tables(metadata)
