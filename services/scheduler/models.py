"""Scheduler tables, all in the `scheduler` schema."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.db import schema_metadata, utcnow
from shared.health import health_tables
from shared.inbox import inbox_table
from shared.outbox import outbox_table
from shared.vocabulary import (
    AgreedUsage,
    CreditGrade,
    RecommendedAction,
    RepaymentStatus,
    Severity,
    TaskStatus,
    VisitMethod,
    check_in,
)

SCHEMA = "scheduler"
metadata = schema_metadata(SCHEMA)


class SchedulerTable(SQLModel, registry=registry(metadata=metadata)):
    pass


class Loan(SchedulerTable, table=True):
    """A disbursed car loan with its borrower credit profile and collateral.

    Borrower name, national id and phone are stored only as ciphertext.
    """

    __tablename__ = "loans"
    __table_args__ = (
        CheckConstraint(check_in("credit_grade", CreditGrade), name="credit_grade"),
        CheckConstraint(check_in("agreed_usage", AgreedUsage), name="agreed_usage"),
        CheckConstraint(
            check_in("last_repayment_status", RepaymentStatus), name="last_repayment_status"
        ),
        CheckConstraint("risk_tier IN ('low', 'medium', 'high')", name="risk_tier"),
    )

    loan_id: str = Field(primary_key=True, max_length=64)
    borrower_id: str = Field(max_length=64)
    borrower_name_enc: str
    national_id_enc: str
    phone_enc: str
    occupation: str = Field(max_length=128)
    monthly_income: Decimal = Field(sa_column=Column(Numeric(18, 2), nullable=False))
    vin: str = Field(max_length=17)
    plate: str = Field(max_length=16)
    make_model: str = Field(max_length=128)
    valuation: Decimal = Field(sa_column=Column(Numeric(18, 2), nullable=False))
    valued_on: date
    credit_grade: CreditGrade = Field(sa_column=Column(String(1), nullable=False))
    principal: Decimal = Field(sa_column=Column(Numeric(18, 2), nullable=False))
    term_months: int
    disbursed_on: date
    region: str = Field(max_length=64, index=True)
    agreed_usage: AgreedUsage = Field(sa_column=Column(String(32), nullable=False))
    # Repayment standing as last posted by core banking.
    days_past_due: int = 0
    last_repayment_status: RepaymentStatus | None = Field(
        default=None, sa_column=Column(String(16), nullable=True)
    )
    # The loan's follow-up standing, kept as tasks are planned and visits completed, so
    # nothing has to be reconstructed from the task history: the soonest open task's due
    # date, and the day of the last completed visit.
    next_due_on: date | None = None
    last_visit_on: date | None = None
    # Keyed digest of the registration last applied: the same registration again changes
    # nothing (services/scheduler/registration.py).
    registration_digest: str | None = Field(default=None, max_length=64)
    # The risk tier the visit policy gives the loan (policy.risk_tier), kept as its inputs
    # change, and what moves it from the tier its facts give: events' shift (a clean record
    # down, bad findings and alerts up), the on-time installments in a row towards a clean
    # record, whether the last visit was clean.
    risk_tier: str | None = Field(default=None, max_length=8)
    tier_shift: int = Field(
        default=0, sa_column=Column(SmallInteger, server_default=text("0"), nullable=False)
    )
    on_time_streak: int = Field(
        default=0, sa_column=Column(SmallInteger, server_default=text("0"), nullable=False)
    )
    last_visit_clean: bool | None = Field(default=None, sa_column=Column(Boolean, nullable=True))
    # The last field inspection and third-party check: their cadences run from these.
    last_field_on: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    last_third_party_on: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class Agent(SchedulerTable, table=True):
    __tablename__ = "agents"
    __table_args__ = (
        CheckConstraint(
            "methods <@ ARRAY["
            + ", ".join(f"'{m.value}'" for m in VisitMethod)
            + "]::varchar(16)[]",
            name="methods",
        ),
        CheckConstraint(
            "working_days <@ ARRAY[1, 2, 3, 4, 5, 6, 7]::smallint[]", name="working_days"
        ),
    )

    agent_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=128)
    region: str = Field(max_length=64, index=True)
    methods: list[VisitMethod] = Field(sa_column=Column(ARRAY(String(16)), nullable=False))
    daily_capacity: int
    active: bool = True
    # ISO weekdays the agent works (1 Monday .. 7 Sunday): dispatch gives it no task due on
    # another day.
    working_days: list[int] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6, 7],
        sa_column=Column(
            ARRAY(SmallInteger),
            server_default=text("'{1,2,3,4,5,6,7}'::smallint[]"),
            nullable=False,
        ),
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class AgentAbsence(SchedulerTable, table=True):
    """Days an agent is away (leave, training), both ends included: no task is due for it
    then, and its open tasks of those days go back to dispatch."""

    __tablename__ = "agent_absences"
    __table_args__ = (CheckConstraint("ends_on >= starts_on", name="span"),)

    agent_id: str = Field(
        sa_column=Column(
            String(64),
            ForeignKey("scheduler.agents.agent_id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    starts_on: date = Field(primary_key=True)
    ends_on: date


class VisitTask(SchedulerTable, table=True):
    """A planned follow-up visit of one loan, by one method, due on a date."""

    __tablename__ = "visit_tasks"
    __table_args__ = (
        # An agent's tasks (its list, its load): only assigned tasks are ever looked up.
        Index(
            "ix_visit_tasks_agent_status_due",
            "agent_id",
            "status",
            "due_on",
            postgresql_where=text("agent_id IS NOT NULL"),
        ),
        Index("ix_visit_tasks_loan_status", "loan_id", "status"),
        Index("ix_visit_tasks_created", "created_at", "task_id"),
        # One open task per loan and method: new plans advance it instead of piling up.
        Index(
            "uq_visit_tasks_open_loan_method",
            "loan_id",
            "method",
            unique=True,
            postgresql_where=text("status = 'open'"),
        ),
        # What the dispatcher reads: open tasks without an agent, per region and method that
        # some agent covers, soonest first (third-party checks are for partners, never
        # dispatched). Tasks of a region nobody covers are never scanned.
        Index(
            "ix_visit_tasks_awaiting_dispatch",
            "region",
            "method",
            "due_on",
            "task_id",
            postgresql_where=text(
                "status = 'open' AND agent_id IS NULL AND method <> 'third_party'"
            ),
        ),
        CheckConstraint(check_in("method", VisitMethod), name="method"),
        CheckConstraint(check_in("status", TaskStatus), name="status"),
    )

    task_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    loan_id: str = Field(max_length=64)
    # The loan's region, copied when the task is written and moved with the loan
    # (registration.py): the dispatch queue is indexed by it.
    region: str = Field(max_length=64)
    method: VisitMethod = Field(sa_column=Column(String(16), nullable=False))
    due_on: date
    status: TaskStatus = Field(
        default=TaskStatus.OPEN, sa_column=Column(String(16), nullable=False)
    )
    agent_id: str | None = Field(default=None, max_length=64)
    reason: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    source_event_id: uuid.UUID | None = None
    visit_id: uuid.UUID | None = None
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    # When the dispatcher (or a supervisor) gave the task its agent.
    assigned_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    completed_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class Policy(SchedulerTable, table=True):
    """A version of the visit policy: the validated document the planner applies, and the
    text it was installed from (what the reviewers read)."""

    __tablename__ = "policies"

    version: int | None = Field(
        default=None, sa_column=Column(Integer, Identity(always=False), primary_key=True)
    )
    document: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    source: str = Field(sa_column=Column(Text, nullable=False))
    installed_by: str = Field(max_length=64)
    installed_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ReplanRun(SchedulerTable, table=True):
    """A run of the portfolio re-plan (replan.py) and what it changed."""

    __tablename__ = "replan_runs"
    __table_args__ = (Index("ix_replan_runs_run_on", "run_on", "policy_version"),)

    run_id: int | None = Field(
        default=None, sa_column=Column(Integer, Identity(always=False), primary_key=True)
    )
    policy_version: int
    run_on: date
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    changes: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))


class AlertState(SchedulerTable, table=True):
    """The latest `alert-raised` of each alert the scheduler has acted on (planning.py): the
    desk re-publishes an escalation under the same `alert_id`, and what the loan already
    got for the alert (its tier move) is not given twice."""

    __tablename__ = "alert_states"

    alert_id: uuid.UUID = Field(primary_key=True)
    loan_id: str = Field(max_length=64)
    rule: str = Field(max_length=64)
    severity: Severity = Field(sa_column=Column(String(16), nullable=False))
    recommended_action: RecommendedAction = Field(sa_column=Column(String(32), nullable=False))
    occurred_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class RepaymentPlan(SchedulerTable, table=True):
    """A repayment plan the risk desk approved (`repayment-plan-approved`): the due dates
    of its installments pace the loan's follow-up calls (repayment_plans.py)."""

    __tablename__ = "repayment_plans"
    __table_args__ = (Index("ix_repayment_plans_loan_id", "loan_id", "approved_at"),)

    plan_id: uuid.UUID = Field(primary_key=True)
    loan_id: str = Field(max_length=64)
    alert_id: uuid.UUID
    due_dates: list[date] = Field(sa_column=Column(ARRAY(Date), nullable=False))
    approved_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


inbox = inbox_table(metadata)
# `loan-registered` events, published by the worker's relay (shared/outbox.py).
outbox = outbox_table(metadata)
# Worker heartbeats, broker positions and losses, read by /readyz (shared/health.py).
health = health_tables(metadata)
