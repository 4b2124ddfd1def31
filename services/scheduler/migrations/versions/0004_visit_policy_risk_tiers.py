"""the visit policy as versioned data; loans keep their risk tier and what moves it; the
daily re-plan's runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "scheduler"
# As the tiers stood when this revision was written (visit_policy.Tier).
TIER_CHECK = "risk_tier IN ('low', 'medium', 'high')"
# Third-party checks wait for a partner's report, never for an agent: the dispatcher's
# index leaves them out, or a portfolio's worth of them would be scanned on every pass.
AWAITING_BEFORE = "status = 'open' AND agent_id IS NULL"
AWAITING_AFTER = "status = 'open' AND agent_id IS NULL AND method <> 'third_party'"


def _awaiting_index(where: str) -> None:
    op.drop_index("ix_visit_tasks_awaiting_dispatch", table_name="visit_tasks", schema=SCHEMA)
    op.create_index(
        "ix_visit_tasks_awaiting_dispatch",
        "visit_tasks",
        ["due_on", "task_id"],
        schema=SCHEMA,
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("version", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("installed_by", sa.String(length=64), nullable=False),
        sa.Column("installed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_policies")),
        schema=SCHEMA,
    )
    op.create_table(
        "replan_runs",
        sa.Column("run_id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("run_on", sa.Date(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_replan_runs")),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_replan_runs_run_on", "replan_runs", ["run_on", "policy_version"], schema=SCHEMA
    )
    op.add_column("loans", sa.Column("risk_tier", sa.String(8), nullable=True), schema=SCHEMA)
    for name in ("tier_shift", "on_time_streak"):
        op.add_column(
            "loans",
            sa.Column(name, sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
            schema=SCHEMA,
        )
    op.add_column(
        "loans", sa.Column("last_visit_clean", sa.Boolean(), nullable=True), schema=SCHEMA
    )
    op.add_column("loans", sa.Column("last_field_on", sa.Date(), nullable=True), schema=SCHEMA)
    op.add_column(
        "loans", sa.Column("last_third_party_on", sa.Date(), nullable=True), schema=SCHEMA
    )
    op.create_check_constraint(op.f("ck_loans_risk_tier"), "loans", TIER_CHECK, schema=SCHEMA)
    _awaiting_index(AWAITING_AFTER)


def downgrade() -> None:
    _awaiting_index(AWAITING_BEFORE)
    op.drop_constraint(op.f("ck_loans_risk_tier"), "loans", type_="check", schema=SCHEMA)
    for name in (
        "last_third_party_on",
        "last_field_on",
        "last_visit_clean",
        "on_time_streak",
        "tier_shift",
        "risk_tier",
    ):
        op.drop_column("loans", name, schema=SCHEMA)
    op.drop_index("ix_replan_runs_run_on", table_name="replan_runs", schema=SCHEMA)
    op.drop_table("replan_runs", schema=SCHEMA)
    op.drop_table("policies", schema=SCHEMA)
