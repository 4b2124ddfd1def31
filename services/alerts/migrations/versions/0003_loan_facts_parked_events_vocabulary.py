"""the projection of loan facts from `loan-registered`; events parked until their loan's
facts arrive; CHECK constraints from the shared vocabulary on actions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 17:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "alerts"

# The vocabulary as it stood when this revision was written: a migration must not change
# meaning when shared/vocabulary.py changes later (a later revision changes the constraint).
# category, severity and status have had their CHECK since 0001.
CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "alerts",
        "recommended_action",
        "recommended_action IN ('phone_visit', 'field_visit', 'repayment_plan', "
        "'legal_review', 'repossession_review')",
    ),
    (
        "alerts",
        "resolution_action",
        "resolution_action IN ('repayment_plan', 'legal_review', 'repossession_review', "
        "'field_visit', 'phone_visit', 'no_action', 'dismiss')",
    ),
)


def upgrade() -> None:
    op.create_table(
        "loan_facts",
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("credit_grade", sa.String(length=1), nullable=False),
        sa.Column("agreed_usage", sa.String(length=32), nullable=False),
        sa.Column("principal", sa.Numeric(18, 2), nullable=False),
        sa.Column("term_months", sa.Integer(), nullable=False),
        sa.Column("disbursed_on", sa.Date(), nullable=False),
        sa.Column("valuation", sa.Numeric(18, 2), nullable=False),
        sa.Column("ltv", sa.Numeric(12, 4), nullable=True),
        sa.Column("facts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_event_id", sa.Uuid(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "credit_grade IN ('A', 'B', 'C', 'D', 'E')", name=op.f("ck_loan_facts_credit_grade")
        ),
        sa.CheckConstraint(
            "agreed_usage IN ('private', 'commercial', 'ride_hailing')",
            name=op.f("ck_loan_facts_agreed_usage"),
        ),
        sa.PrimaryKeyConstraint("loan_id", name=op.f("pk_loan_facts")),
        schema=SCHEMA,
    )
    op.create_table(
        "parked_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parked_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_parked_events_event_id")),
        schema=SCHEMA,
    )
    op.create_index("ix_parked_events_loan", "parked_events", ["loan_id"], schema=SCHEMA)
    op.create_index("ix_parked_events_parked", "parked_events", ["parked_at"], schema=SCHEMA)
    for table, name, condition in CHECKS:
        op.create_check_constraint(op.f(f"ck_{table}_{name}"), table, condition, schema=SCHEMA)


def downgrade() -> None:
    for table, name, _ in reversed(CHECKS):
        op.drop_constraint(op.f(f"ck_{table}_{name}"), table, type_="check", schema=SCHEMA)
    op.drop_index("ix_parked_events_parked", table_name="parked_events", schema=SCHEMA)
    op.drop_index("ix_parked_events_loan", table_name="parked_events", schema=SCHEMA)
    op.drop_table("parked_events", schema=SCHEMA)
    op.drop_table("loan_facts", schema=SCHEMA)
