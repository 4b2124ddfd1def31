"""review, versions and drafts of visits; idempotency keys that expire

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 17:00:00

- `visits.visits`: `corrects_visit_id` and `version` (a correction is a new row naming the
  version it corrects, at most one per version), `carried_evidence` (the corrected
  version's evidence a correction stands on), `review_state` (`pending` for every visit
  recorded so far: none has been reviewed). `idempotency_key` becomes nullable: the worker
  clears keys older than their retention. The one-visit-per-task index now counts first
  versions only, since a correction carries its version's task.
- `visits.visit_reviews`: supervisors' decisions, append-only and chained per loan.
- `visits.visit_drafts`: visits begun on a device and not submitted.

Existing chain entries keep their format (1 or 2) and verify as written; new entries are
format 3. Added columns are nullable or have a constant default: no table rewrite.
The vocabulary is written out here, not imported (see 0005).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REVIEW_STATES = "review_state IN ('pending', 'approved', 'returned', 'superseded')"
VERSION = "version >= 1 AND (version = 1) = (corrects_visit_id IS NULL)"
REVIEW_CHECKS = {
    "ck_visit_reviews_decision": "decision IN ('approve', 'return')",
    "ck_visit_reviews_reason": "decision = 'approve' OR reason IS NOT NULL",
}
_TASK_INDEX = "uq_visits_task"


def upgrade() -> None:
    op.add_column("visits", sa.Column("corrects_visit_id", sa.Uuid(), nullable=True), schema="visits")
    op.add_column(
        "visits",
        sa.Column("version", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
        schema="visits",
    )
    op.add_column(
        "visits",
        sa.Column("carried_evidence", postgresql.ARRAY(sa.Uuid()), nullable=True),
        schema="visits",
    )
    op.add_column(
        "visits",
        sa.Column(
            "review_state",
            sa.String(length=16),
            server_default=sa.text("'pending'"),
            nullable=False,
        ),
        schema="visits",
    )
    op.create_foreign_key(
        op.f("fk_visits_corrects_visit_id_visits"),
        "visits",
        "visits",
        ["corrects_visit_id"],
        ["visit_id"],
        source_schema="visits",
        referent_schema="visits",
    )
    op.create_unique_constraint(
        "uq_visits_corrects_visit_id", "visits", ["corrects_visit_id"], schema="visits"
    )
    op.create_check_constraint(
        op.f("ck_visits_review_state"), "visits", REVIEW_STATES, schema="visits"
    )
    op.create_check_constraint(op.f("ck_visits_version"), "visits", VERSION, schema="visits")
    op.create_index(
        "ix_visits_region_review_created",
        "visits",
        ["region", "review_state", "created_at", "visit_id"],
        unique=False,
        schema="visits",
    )
    op.alter_column(
        "visits",
        "idempotency_key",
        existing_type=sqlmodel.sql.sqltypes.AutoString(length=255),
        nullable=True,
        schema="visits",
    )
    op.drop_index(_TASK_INDEX, table_name="visits", schema="visits")
    op.create_index(
        _TASK_INDEX,
        "visits",
        ["task_id"],
        unique=True,
        schema="visits",
        postgresql_where=sa.text("task_id IS NOT NULL AND corrects_visit_id IS NULL"),
    )

    op.create_table(
        "visit_reviews",
        sa.Column("review_id", sa.Uuid(), nullable=False),
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.Column("loan_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reviewed_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("payload_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("entry_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        *(sa.CheckConstraint(sql, name=op.f(name)) for name, sql in REVIEW_CHECKS.items()),
        sa.ForeignKeyConstraint(
            ["visit_id"],
            ["visits.visits.visit_id"],
            name=op.f("fk_visit_reviews_visit_id_visits"),
        ),
        sa.PrimaryKeyConstraint("review_id", name=op.f("pk_visit_reviews")),
        sa.UniqueConstraint("visit_id", name="uq_visit_reviews_visit_id"),
        sa.UniqueConstraint("loan_id", "seq", name="uq_visit_reviews_loan_seq"),
        schema="visits",
    )

    op.create_table(
        "visit_drafts",
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("loan_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("body", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("visit_id", name=op.f("pk_visit_drafts")),
        schema="visits",
    )
    op.create_index(
        "ix_visit_drafts_agent_updated",
        "visit_drafts",
        ["agent_id", "updated_at", "visit_id"],
        unique=False,
        schema="visits",
    )
    op.create_index(
        "ix_visit_drafts_updated", "visit_drafts", ["updated_at"], unique=False, schema="visits"
    )


def downgrade() -> None:
    op.drop_index("ix_visit_drafts_updated", table_name="visit_drafts", schema="visits")
    op.drop_index("ix_visit_drafts_agent_updated", table_name="visit_drafts", schema="visits")
    op.drop_table("visit_drafts", schema="visits")
    op.drop_table("visit_reviews", schema="visits")
    # Corrections and their chain entries cannot survive the older schema (two versions of
    # one task would break its unique index): a downgrade past 0007 drops them.
    op.execute(
        "DELETE FROM visits.visit_chain WHERE visit_id IN"
        " (SELECT visit_id FROM visits.visits WHERE corrects_visit_id IS NOT NULL)"
    )
    op.execute(
        "UPDATE visits.evidence SET visit_id = NULL WHERE visit_id IN"
        " (SELECT visit_id FROM visits.visits WHERE corrects_visit_id IS NOT NULL)"
    )
    op.execute("DELETE FROM visits.visits WHERE corrects_visit_id IS NOT NULL")
    op.drop_index(_TASK_INDEX, table_name="visits", schema="visits")
    op.create_index(
        _TASK_INDEX,
        "visits",
        ["task_id"],
        unique=True,
        schema="visits",
        postgresql_where=sa.text("task_id IS NOT NULL"),
    )
    # Expired keys come back as their visit's id: unique per agent, never a client's key.
    op.execute(
        "UPDATE visits.visits SET idempotency_key = 'expired:' || visit_id::text"
        " WHERE idempotency_key IS NULL"
    )
    op.alter_column(
        "visits",
        "idempotency_key",
        existing_type=sqlmodel.sql.sqltypes.AutoString(length=255),
        nullable=False,
        schema="visits",
    )
    op.drop_index("ix_visits_region_review_created", table_name="visits", schema="visits")
    op.drop_constraint(op.f("ck_visits_version"), "visits", schema="visits", type_="check")
    op.drop_constraint(op.f("ck_visits_review_state"), "visits", schema="visits", type_="check")
    op.drop_constraint("uq_visits_corrects_visit_id", "visits", schema="visits", type_="unique")
    op.drop_constraint(
        op.f("fk_visits_corrects_visit_id_visits"), "visits", schema="visits", type_="foreignkey"
    )
    op.drop_column("visits", "review_state", schema="visits")
    op.drop_column("visits", "carried_evidence", schema="visits")
    op.drop_column("visits", "version", schema="visits")
    op.drop_column("visits", "corrects_visit_id", schema="visits")
