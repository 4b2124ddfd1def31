"""evidence, visits' region, chain entry format

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 16:40:00

- `visits.evidence`: uploaded photos and scans (metadata; the bytes are in the evidence
  store), attached to at most one visit.
- `visits.visits.region`: the loan's region at capture, which supervisors' reads are
  narrowed by. Visits recorded before this revision keep NULL: their region is the
  scheduler's to tell, and it is not asked from a migration, so only ops and admin read
  them (a supervisor seeing less is the safe side of the rule).
- `visits.visit_chain.format`: existing entries are format 1 (no evidence, no region);
  entries written from now on are format 2 (services/visits/chain.py). Nothing is
  re-chained: old entries verify as they were written.

Added columns are nullable or have a constant default: no table rewrite, a brief lock.
The vocabulary is written out here, not imported (see 0005).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVIDENCE_CHECKS = {
    "ck_evidence_kind": "kind IN ('photo', 'document')",
    "ck_evidence_content_type": (
        "content_type IN ('image/jpeg', 'image/png', 'image/heic', 'application/pdf')"
    ),
    "ck_evidence_size_bytes": "size_bytes > 0",
    "ck_evidence_sha256": "sha256 ~ '^[0-9a-f]{64}$'",
}


def upgrade() -> None:
    op.add_column(
        "visits",
        sa.Column("region", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        schema="visits",
    )
    op.create_index(
        "ix_visits_region_created",
        "visits",
        ["region", "created_at", "visit_id"],
        unique=False,
        schema="visits",
    )
    op.add_column(
        "visit_chain",
        sa.Column("format", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
        schema="visits",
    )
    op.create_table(
        "evidence",
        sa.Column("evidence_id", sa.Uuid(), nullable=False),
        sa.Column("uploaded_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("content_type", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("visit_id", sa.Uuid(), nullable=True),
        *(sa.CheckConstraint(sql, name=op.f(name)) for name, sql in EVIDENCE_CHECKS.items()),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["visits.visits.visit_id"], name=op.f("fk_evidence_visit_id_visits")
        ),
        sa.PrimaryKeyConstraint("evidence_id", name=op.f("pk_evidence")),
        sa.UniqueConstraint("uploaded_by", "sha256", name="uq_evidence_uploader_sha256"),
        schema="visits",
    )
    op.create_index(
        "ix_evidence_visit",
        "evidence",
        ["visit_id"],
        unique=False,
        schema="visits",
        postgresql_where=sa.text("visit_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_evidence_visit", table_name="evidence", schema="visits")
    op.drop_table("evidence", schema="visits")
    op.drop_column("visit_chain", "format", schema="visits")
    op.drop_index("ix_visits_region_created", table_name="visits", schema="visits")
    op.drop_column("visits", "region", schema="visits")
