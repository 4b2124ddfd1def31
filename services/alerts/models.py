"""Alerts tables, all in the `alerts` schema."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.db import schema_metadata, utcnow
from shared.health import health_tables
from shared.inbox import inbox_table
from shared.outbox import outbox_table
from shared.vocabulary import (
    AgreedUsage,
    AlertStatus,
    Category,
    CreditGrade,
    RecommendedAction,
    Severity,
    check_in,
)

SCHEMA = "alerts"
metadata = schema_metadata(SCHEMA)


class ResolutionAction(StrEnum):
    """What operations did about an alert; `dismiss` closes it as a false alarm."""

    REPAYMENT_PLAN = "repayment_plan"
    LEGAL_REVIEW = "legal_review"
    REPOSSESSION_REVIEW = "repossession_review"
    FIELD_VISIT = "field_visit"
    PHONE_VISIT = "phone_visit"
    NO_ACTION = "no_action"
    DISMISS = "dismiss"
    # Closed by the service itself: a posting brought the loan back to current.
    CURED = "cured"


class AlertsTable(SQLModel, registry=registry(metadata=metadata)):
    pass


class Alert(AlertsTable, table=True):
    """A risk warning on one loan, raised by a rule from a repayment posting or a visit,
    and worked by operations from open to acknowledged to resolved (or dismissed).

    Its pages keep 30 % free (fillfactor 70, migration 0007): an active alert is rewritten
    by every batch that sees its loan again, and room on the page keeps those updates off
    its indexes."""

    __tablename__ = "alerts"
    __table_args__ = (
        # The rules are deterministic, so one source event raises each rule at most once;
        # this holds even if the inbox were bypassed (e.g. a replay from the DLQ).
        UniqueConstraint("source_event_id", "rule", name="uq_alerts_source_event_rule"),
        Index("ix_alerts_created", "created_at", "alert_id"),
        Index("ix_alerts_loan_created", "loan_id", "created_at"),
        Index("ix_alerts_status_severity_created", "status", "severity", "created_at"),
        # One active alert per loan and rule family: a worse finding escalates it, a repeat
        # is counted on it. Alerts from before rule families (no rule_version) are outside.
        # What the SLA sweep looks at: open alerts not yet in the supervisor queue.
        Index(
            "ix_alerts_sla_pending",
            "severity",
            "severity_since",
            postgresql_where=text("status = 'open' AND supervisor_queue_at IS NULL"),
        ),
        Index(
            "uq_alerts_active_loan_family",
            "loan_id",
            "family",
            unique=True,
            postgresql_where=text(
                "status IN ('open', 'acknowledged', 'in_progress') AND rule_version IS NOT NULL"
            ),
        ),
        CheckConstraint(check_in("category", Category), name="category"),
        CheckConstraint(check_in("severity", Severity), name="severity"),
        CheckConstraint(check_in("status", AlertStatus), name="status"),
        CheckConstraint(
            check_in("recommended_action", RecommendedAction), name="recommended_action"
        ),
        CheckConstraint(check_in("resolution_action", ResolutionAction), name="resolution_action"),
    )

    alert_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    loan_id: str = Field(max_length=64)
    rule: str = Field(max_length=64)
    # Plain strings in PostgreSQL (the CHECKs hold them to the vocabulary), enums in Python.
    category: Category = Field(sa_column=Column(String(16), nullable=False))
    severity: Severity = Field(sa_column=Column(String(16), nullable=False))
    status: AlertStatus = Field(
        default=AlertStatus.OPEN, sa_column=Column(String(16), nullable=False)
    )
    reason: str = Field(sa_column=Column(Text, nullable=False))
    recommended_action: RecommendedAction = Field(sa_column=Column(String(32), nullable=False))
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
    resolution_action: ResolutionAction | None = Field(
        default=None, sa_column=Column(String(32), nullable=True)
    )
    resolution_note: str | None = Field(default=None, max_length=2000)
    # The rule family the alert stands for on its loan (rules.yaml), the version of the rule
    # set that last raised or escalated it, and the facts that fired it.
    family: str = Field(max_length=32)
    rule_version: int | None = None
    facts: dict[str, object] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}")
    )
    # Sightings of its family on the loan while it was active, the latest event time of
    # one, and the event time it was last announced (the suppression window starts there).
    occurrences: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    last_seen_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_raised_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # Who on the desk works it, and the row version the ETag shows (If-Match compares it).
    assignee: str | None = Field(default=None, max_length=128)
    # When it took its current severity (its acknowledgement deadline counts from there),
    # and when it went to the supervisor queue for missing that deadline.
    severity_since: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    supervisor_queue_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))


class AlertHistory(AlertsTable, table=True):
    """Every change of an alert: raised, escalated, announced again, cured, and each
    transition and assignment on the desk, with who, when and why."""

    __tablename__ = "alert_history"
    __table_args__ = (Index("ix_alert_history_alert", "alert_id", "id"),)

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True)
    )
    alert_id: uuid.UUID
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    who: str = Field(max_length=128)
    action: str = Field(max_length=32)
    from_status: str | None = Field(default=None, max_length=16)
    to_status: str = Field(max_length=16)
    severity: str = Field(max_length=16)
    note: str = Field(sa_column=Column(Text, nullable=False))
    source_event_id: uuid.UUID | None = None
    detail: dict[str, object] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}")
    )


class RuleSetRow(AlertsTable, table=True):
    """A version of the rules file as it was loaded: what `rule_version` of an alert means."""

    __tablename__ = "rule_sets"

    version: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    digest: str = Field(max_length=64)
    body: dict[str, object] = Field(sa_column=Column(JSONB, nullable=False))
    loaded_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class RepaymentMemory(AlertsTable, table=True):
    """The postings applied to each loan, as the rules remember them (consecutive misses,
    the arrears a repayment plan must cover). Its unique event id also makes applying a
    posting twice (a replay past the inbox) a no-op."""

    __tablename__ = "repayment_memory"
    __table_args__ = (Index("ix_repayment_memory_loan", "loan_id", "seq"),)

    seq: int | None = Field(
        default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True)
    )
    event_id: uuid.UUID = Field(unique=True)
    loan_id: str = Field(max_length=64)
    installment_no: int
    status: str = Field(max_length=16)
    days_past_due: int
    amount_due: Decimal = Field(sa_column=Column(Numeric(18, 2), nullable=False))
    amount_paid: Decimal = Field(sa_column=Column(Numeric(18, 2), nullable=False))
    occurred_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class VisitMemory(AlertsTable, table=True):
    """The visits applied to each loan, as the rules remember them (unreachable three times
    in 30 days); like the postings' memory, it makes a second application a no-op."""

    __tablename__ = "visit_memory"
    __table_args__ = (Index("ix_visit_memory_loan_ended", "loan_id", "ended_at"),)

    seq: int | None = Field(
        default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True)
    )
    event_id: uuid.UUID = Field(unique=True)
    loan_id: str = Field(max_length=64)
    occasion: str = Field(max_length=64)
    outcome: str = Field(max_length=32)
    ended_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class PlanStatus(StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"


class RepaymentPlan(AlertsTable, table=True):
    """A repayment plan proposed to resolve an alert: it stands once a second person (not
    the proposer) approves it, which resolves the alert and announces the plan."""

    __tablename__ = "repayment_plans"
    __table_args__ = (
        CheckConstraint(check_in("status", PlanStatus), name="status"),
        # One plan in the making per alert.
        Index(
            "uq_repayment_plans_proposed_alert",
            "alert_id",
            unique=True,
            postgresql_where=text("status = 'proposed'"),
        ),
    )

    plan_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    alert_id: uuid.UUID
    loan_id: str = Field(max_length=64)
    status: PlanStatus = Field(sa_column=Column(String(16), nullable=False))
    # The loan's arrears from its postings when proposed, and what the plan pays in all.
    arrears: Decimal = Field(sa_column=Column(Numeric(18, 2), nullable=False))
    total: Decimal = Field(sa_column=Column(Numeric(18, 2), nullable=False))
    installments: list[dict[str, str]] = Field(sa_column=Column(JSONB, nullable=False))
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    proposed_by: str = Field(max_length=128)
    proposed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    approved_by: str | None = Field(default=None, max_length=128)
    approved_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class LegalStage(StrEnum):
    """A legal case's stages, in the only order it may take them."""

    REFERRED = "referred"
    FILED = "filed"
    JUDGMENT = "judgment"
    CLOSED = "closed"


class LegalCase(AlertsTable, table=True):
    """A loan referred to legal from an alert (which the referral resolves), advanced stage
    by stage; `stages` keeps each step (stage, at, who, note)."""

    __tablename__ = "legal_cases"
    __table_args__ = (
        CheckConstraint(check_in("stage", LegalStage), name="stage"),
        UniqueConstraint("alert_id", name="uq_legal_cases_alert"),
    )

    case_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    alert_id: uuid.UUID
    loan_id: str = Field(max_length=64)
    stage: LegalStage = Field(sa_column=Column(String(16), nullable=False))
    stages: list[dict[str, str | None]] = Field(sa_column=Column(JSONB, nullable=False))
    opened_by: str = Field(max_length=128)
    opened_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class LoanFacts(AlertsTable, table=True):
    """The alerts service's projection of a loan as the scheduler registered it, from
    `loan-registered`: what the rules need, kept here so that applying an event never
    waits on the scheduler. The latest `occurred_at` per loan wins (`facts_at`)."""

    __tablename__ = "loan_facts"
    __table_args__ = (
        CheckConstraint(check_in("credit_grade", CreditGrade), name="credit_grade"),
        CheckConstraint(check_in("agreed_usage", AgreedUsage), name="agreed_usage"),
    )

    loan_id: str = Field(primary_key=True, max_length=64)
    region: str = Field(max_length=64)
    credit_grade: CreditGrade = Field(sa_column=Column(String(1), nullable=False))
    agreed_usage: AgreedUsage = Field(sa_column=Column(String(32), nullable=False))
    principal: Decimal = Field(sa_column=Column(Numeric(18, 2), nullable=False))
    term_months: int
    disbursed_on: date
    valuation: Decimal = Field(sa_column=Column(Numeric(18, 2), nullable=False))
    ltv: Decimal | None = Field(default=None, sa_column=Column(Numeric(12, 4), nullable=True))
    # The `occurred_at` of the event these facts come from; an older event changes nothing.
    facts_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    source_event_id: uuid.UUID
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ParkedEvent(AlertsTable, table=True):
    """A posting or visit that arrived before its loan's `loan-registered` (topics are not
    ordered with each other). It is applied in the transaction that projects the loan's
    facts, or dead-lettered by the parking sweep once the grace period is over."""

    __tablename__ = "parked_events"
    __table_args__ = (
        Index("ix_parked_events_loan", "loan_id"),
        Index("ix_parked_events_parked", "parked_at"),
    )

    # Park order: parked events are applied in it, and it stands in for the source offset
    # in a dead letter, so a replay sends each parked event once and in order.
    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True)
    )
    event_id: uuid.UUID = Field(unique=True)
    topic: str = Field(max_length=128)
    loan_id: str = Field(max_length=64)
    payload: dict[str, object] = Field(sa_column=Column(JSONB, nullable=False))
    parked_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
# Worker heartbeats, broker positions and losses, read by /readyz (shared/health.py).
health = health_tables(metadata)
