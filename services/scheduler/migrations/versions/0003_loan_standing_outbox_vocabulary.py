"""loans keep their next due visit and last visit; tasks wait for dispatch; the outbox of
`loan-registered` (backfilled for the loans already registered); CHECK constraints from the
shared vocabulary

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 16:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "scheduler"

# The vocabulary as it stood when this revision was written: a migration must not change
# meaning when shared/vocabulary.py changes later (a later revision changes the constraint).
CHECKS: tuple[tuple[str, str, str], ...] = (
    ("loans", "credit_grade", "credit_grade IN ('A', 'B', 'C', 'D', 'E')"),
    (
        "loans",
        "agreed_usage",
        "agreed_usage IN ('private', 'commercial', 'ride_hailing')",
    ),
    (
        "loans",
        "last_repayment_status",
        "last_repayment_status IN ('paid', 'partial', 'missed', 'reversed')",
    ),
    ("visit_tasks", "method", "method IN ('phone', 'field', 'third_party')"),
    ("visit_tasks", "status", "status IN ('open', 'completed', 'cancelled')"),
    (
        "agents",
        "methods",
        "methods <@ ARRAY['phone', 'field', 'third_party']::varchar(16)[]",
    ),
)

# One `loan-registered` per loan already registered, so the alerts service's projection of
# loan facts starts complete. Money and ratios are decimal strings, as the contract says.
BACKFILL = """
INSERT INTO scheduler.outbox (event_id, topic, message_key, payload)
SELECT ids.event_id, 'loan-registered', l.loan_id,
       jsonb_build_object(
           'event_id', ids.event_id,
           'event_type', 'loan-registered',
           'schema_version', 1,
           'occurred_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'loan_id', l.loan_id,
           'region', l.region,
           'credit_grade', l.credit_grade,
           'agreed_usage', l.agreed_usage,
           'principal', l.principal::text,
           'term_months', l.term_months,
           'disbursed_on', l.disbursed_on::text,
           'valuation', l.valuation::text,
           'ltv', CASE WHEN l.valuation > 0
                       THEN round(l.principal / l.valuation, 4)::text END
       )
FROM scheduler.loans AS l
CROSS JOIN LATERAL (SELECT gen_random_uuid() AS event_id) AS ids
ORDER BY l.loan_id
"""


def upgrade() -> None:
    op.add_column("loans", sa.Column("next_due_on", sa.Date(), nullable=True), schema=SCHEMA)
    op.add_column("loans", sa.Column("last_visit_on", sa.Date(), nullable=True), schema=SCHEMA)
    # A keyed digest of what was registered, so that registering the same loan again (a
    # re-imported portfolio file) is recognised and changes nothing.
    op.add_column(
        "loans", sa.Column("registration_digest", sa.String(64), nullable=True), schema=SCHEMA
    )
    op.add_column(
        "visit_tasks",
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        schema=SCHEMA,
    )
    # What the dispatcher reads: open tasks without an agent, soonest first.
    op.create_index(
        "ix_visit_tasks_awaiting_dispatch",
        "visit_tasks",
        ["due_on", "task_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'open' AND agent_id IS NULL"),
    )
    op.execute(
        "UPDATE scheduler.loans AS l SET next_due_on = t.due_on "
        "FROM (SELECT loan_id, min(due_on) AS due_on FROM scheduler.visit_tasks "
        "WHERE status = 'open' GROUP BY loan_id) AS t WHERE t.loan_id = l.loan_id"
    )
    op.execute(
        "UPDATE scheduler.loans AS l SET last_visit_on = t.visited_on "
        "FROM (SELECT loan_id, max(completed_at)::date AS visited_on FROM scheduler.visit_tasks "
        "WHERE status = 'completed' GROUP BY loan_id) AS t WHERE t.loan_id = l.loan_id"
    )
    for table, name, condition in CHECKS:
        op.create_check_constraint(op.f(f"ck_{table}_{name}"), table, condition, schema=SCHEMA)
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("message_key", sa.String(length=64), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        unique=False,
        schema=SCHEMA,
        postgresql_where="published_at IS NULL",
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_index(
        "ix_outbox_unpublished",
        table_name="outbox",
        schema=SCHEMA,
        postgresql_where="published_at IS NULL",
    )
    op.drop_table("outbox", schema=SCHEMA)
    for table, name, _ in CHECKS:
        op.drop_constraint(op.f(f"ck_{table}_{name}"), table, type_="check", schema=SCHEMA)
    op.drop_index(
        "ix_visit_tasks_awaiting_dispatch",
        table_name="visit_tasks",
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'open' AND agent_id IS NULL"),
    )
    op.drop_column("visit_tasks", "assigned_at", schema=SCHEMA)
    op.drop_column("loans", "registration_digest", schema=SCHEMA)
    op.drop_column("loans", "last_visit_on", schema=SCHEMA)
    op.drop_column("loans", "next_due_on", schema=SCHEMA)
