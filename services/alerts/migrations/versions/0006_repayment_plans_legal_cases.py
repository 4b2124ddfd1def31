"""resolutions as records: repayment plans (four eyes) and legal cases

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 18:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "alerts"


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    jsonb = postgresql.JSONB(astext_type=sa.Text())
    op.create_table(
        "repayment_plans",
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("arrears", sa.Numeric(18, 2), nullable=False),
        sa.Column("total", sa.Numeric(18, 2), nullable=False),
        sa.Column("installments", jsonb, nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("proposed_by", sa.String(length=128), nullable=False),
        sa.Column("proposed_at", ts, nullable=False),
        sa.Column("approved_by", sa.String(length=128), nullable=True),
        sa.Column("approved_at", ts, nullable=True),
        sa.CheckConstraint(
            "status IN ('proposed', 'approved')", name=op.f("ck_repayment_plans_status")
        ),
        sa.PrimaryKeyConstraint("plan_id", name=op.f("pk_repayment_plans")),
        schema=SCHEMA,
    )
    op.create_index(
        "uq_repayment_plans_proposed_alert",
        "repayment_plans",
        ["alert_id"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'proposed'"),
    )
    op.create_table(
        "legal_cases",
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("stages", jsonb, nullable=False),
        sa.Column("opened_by", sa.String(length=128), nullable=False),
        sa.Column("opened_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.CheckConstraint(
            "stage IN ('referred', 'filed', 'judgment', 'closed')",
            name=op.f("ck_legal_cases_stage"),
        ),
        sa.PrimaryKeyConstraint("case_id", name=op.f("pk_legal_cases")),
        sa.UniqueConstraint("alert_id", name="uq_legal_cases_alert"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("legal_cases", schema=SCHEMA)
    op.drop_index(
        "uq_repayment_plans_proposed_alert", table_name="repayment_plans", schema=SCHEMA
    )
    op.drop_table("repayment_plans", schema=SCHEMA)
