"""the alerts the scheduler has acted on, and approved repayment plans

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "scheduler"


def upgrade() -> None:
    # The latest state of each alert the scheduler has acted on: the desk re-publishes an
    # escalation under the same alert_id, and a loan moves up once per alert, not per event.
    op.create_table(
        "alert_states",
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("recommended_action", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_alert_states")),
        schema=SCHEMA,
    )
    # Approved repayment plans: their installments' due dates pace the follow-up calls.
    op.create_table(
        "repayment_plans",
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("due_dates", sa.ARRAY(sa.Date()), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("plan_id", name=op.f("pk_repayment_plans")),
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_repayment_plans_loan_id"),
        "repayment_plans",
        ["loan_id", "approved_at"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_repayment_plans_loan_id"), "repayment_plans", schema=SCHEMA)
    op.drop_table("repayment_plans", schema=SCHEMA)
    op.drop_table("alert_states", schema=SCHEMA)
