"""alerts with memory: rule families (one active alert per loan and family), occurrences,
versioned rule sets, the alert history, the per-loan memory of postings and visits, the
in_progress status, `cured` resolutions, assignee and row version

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "alerts"

# The constraints as this revision writes them (a later vocabulary change is a later
# revision): old text to restore on downgrade, new text.
CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "status",
        "status IN ('open', 'acknowledged', 'resolved', 'dismissed')",
        "status IN ('open', 'acknowledged', 'in_progress', 'resolved', 'dismissed')",
    ),
    (
        "resolution_action",
        "resolution_action IN ('repayment_plan', 'legal_review', 'repossession_review', "
        "'field_visit', 'phone_visit', 'no_action', 'dismiss')",
        "resolution_action IN ('repayment_plan', 'legal_review', 'repossession_review', "
        "'field_visit', 'phone_visit', 'no_action', 'dismiss', 'cured')",
    ),
)

# The family of each rule code raised before families existed, so a loan's old alert and
# its new ones are read together; codes not listed become their own family.
LEGACY_FAMILY = """
    CASE rule
        WHEN 'missed_installment' THEN 'arrears'
        WHEN 'dpd_30' THEN 'arrears'
        WHEN 'dpd_90' THEN 'arrears'
        WHEN 'borrower_unreachable' THEN 'contact'
        WHEN 'visit_refused' THEN 'refusal'
        WHEN 'borrower_unemployed' THEN 'capacity'
        WHEN 'repayment_difficulty' THEN 'capacity'
        WHEN 'vehicle_misuse' THEN 'misuse'
        WHEN 'vehicle_damaged' THEN 'damage'
        WHEN 'documents_not_intact' THEN 'documents'
        WHEN 'collateral_encumbered' THEN 'encumbrance'
        ELSE left(rule, 32)
    END
"""


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.add_column("alerts", sa.Column("family", sa.String(length=32), nullable=True), schema=SCHEMA)
    op.add_column("alerts", sa.Column("rule_version", sa.Integer(), nullable=True), schema=SCHEMA)
    op.add_column(
        "alerts",
        sa.Column(
            "facts",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        schema=SCHEMA,
    )
    op.add_column("alerts", sa.Column("occurrences", sa.Integer(), nullable=True), schema=SCHEMA)
    op.add_column("alerts", sa.Column("last_seen_at", ts, nullable=True), schema=SCHEMA)
    op.add_column("alerts", sa.Column("last_raised_at", ts, nullable=True), schema=SCHEMA)
    op.add_column("alerts", sa.Column("assignee", sa.String(length=128)), schema=SCHEMA)
    op.add_column(
        "alerts",
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        schema=SCHEMA,
    )
    op.execute(
        f"UPDATE {SCHEMA}.alerts SET family = {LEGACY_FAMILY}, occurrences = 1, "
        "last_seen_at = created_at, last_raised_at = created_at"
    )
    for name in ("family", "occurrences", "last_seen_at", "last_raised_at"):
        op.alter_column("alerts", name, nullable=False, schema=SCHEMA)
    op.create_index(
        "uq_alerts_active_loan_family",
        "alerts",
        ["loan_id", "family"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text(
            "status IN ('open', 'acknowledged', 'in_progress') AND rule_version IS NOT NULL"
        ),
    )
    for name, _, new in CHECKS:
        op.drop_constraint(op.f(f"ck_alerts_{name}"), "alerts", type_="check", schema=SCHEMA)
        op.create_check_constraint(op.f(f"ck_alerts_{name}"), "alerts", new, schema=SCHEMA)

    op.create_table(
        "alert_history",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("at", ts, nullable=False),
        sa.Column("who", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("source_event_id", sa.Uuid(), nullable=True),
        sa.Column(
            "detail",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_history")),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_alert_history_alert", "alert_history", ["alert_id", "id"], schema=SCHEMA
    )
    op.create_table(
        "rule_sets",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("body", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("loaded_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_rule_sets")),
        schema=SCHEMA,
    )
    op.create_table(
        "repayment_memory",
        sa.Column("seq", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("installment_no", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("amount_due", sa.Numeric(18, 2), nullable=False),
        sa.Column("amount_paid", sa.Numeric(18, 2), nullable=False),
        sa.Column("occurred_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_repayment_memory")),
        sa.UniqueConstraint("event_id", name=op.f("uq_repayment_memory_event_id")),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_repayment_memory_loan", "repayment_memory", ["loan_id", "seq"], schema=SCHEMA
    )
    op.create_table(
        "visit_memory",
        sa.Column("seq", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("occasion", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("ended_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_visit_memory")),
        sa.UniqueConstraint("event_id", name=op.f("uq_visit_memory_event_id")),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_visit_memory_loan_ended", "visit_memory", ["loan_id", "ended_at"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_index("ix_visit_memory_loan_ended", table_name="visit_memory", schema=SCHEMA)
    op.drop_table("visit_memory", schema=SCHEMA)
    op.drop_index("ix_repayment_memory_loan", table_name="repayment_memory", schema=SCHEMA)
    op.drop_table("repayment_memory", schema=SCHEMA)
    op.drop_table("rule_sets", schema=SCHEMA)
    op.drop_index("ix_alert_history_alert", table_name="alert_history", schema=SCHEMA)
    op.drop_table("alert_history", schema=SCHEMA)
    # Statuses and resolutions the old constraints do not know fall back to their nearest.
    op.execute(f"UPDATE {SCHEMA}.alerts SET status = 'acknowledged' WHERE status = 'in_progress'")
    op.execute(
        f"UPDATE {SCHEMA}.alerts SET resolution_action = 'no_action' "
        "WHERE resolution_action = 'cured'"
    )
    for name, old, _ in reversed(CHECKS):
        op.drop_constraint(op.f(f"ck_alerts_{name}"), "alerts", type_="check", schema=SCHEMA)
        op.create_check_constraint(op.f(f"ck_alerts_{name}"), "alerts", old, schema=SCHEMA)
    op.drop_index("uq_alerts_active_loan_family", table_name="alerts", schema=SCHEMA)
    for name in (
        "version",
        "assignee",
        "last_raised_at",
        "last_seen_at",
        "occurrences",
        "facts",
        "rule_version",
        "family",
    ):
        op.drop_column("alerts", name, schema=SCHEMA)
