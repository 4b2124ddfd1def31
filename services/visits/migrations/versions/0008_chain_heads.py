"""the head of each loan's chain of visits, for captures to append with one upsert

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 19:15:00

`visits.chain_heads` holds each loan's last chain entry (seq, entry hash, and the hash
before it). A capture upserts it instead of taking the loan's advisory lock and reading
the chain's last entry (services/visits/append.py). Filled here from `visit_chain`; the
visits APIs of before this revision must be stopped while it runs (they append without
it), as every revision here is applied before the APIs start.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chain_heads",
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("loan_id", name=op.f("pk_chain_heads")),
        schema="visits",
    )
    op.execute(
        "INSERT INTO visits.chain_heads (loan_id, seq, entry_hash, prev_hash)"
        " SELECT DISTINCT ON (loan_id) loan_id, seq, entry_hash, prev_hash"
        " FROM visits.visit_chain ORDER BY loan_id, seq DESC"
    )


def downgrade() -> None:
    op.drop_table("chain_heads", schema="visits")
