"""visit_chain: the tamper-evident record of visits, with the visits already recorded chained

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from services.visits import chain

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows are chained in the order they were recorded, a loan at a time.
_RECORDED = sa.text(
    "SELECT " + ", ".join(chain.CHAINED_FIELDS) + " FROM visits.visits"
    " ORDER BY loan_id, created_at, visit_id"
)
_INSERT = sa.text(
    "INSERT INTO visits.visit_chain"
    " (visit_id, loan_id, seq, prev_hash, payload_hash, entry_hash, chained_at)"
    " VALUES (:visit_id, :loan_id, :seq, :prev_hash, :payload_hash, :entry_hash, now())"
)


def upgrade() -> None:
    op.create_table(
        "visit_chain",
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.Column("loan_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("payload_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("entry_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("chained_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["visits.visits.visit_id"], name=op.f("fk_visit_chain_visit_id_visits")
        ),
        sa.PrimaryKeyConstraint("visit_id", name=op.f("pk_visit_chain")),
        sa.UniqueConstraint("loan_id", "seq", name="uq_visit_chain_loan_seq"),
        schema="visits",
    )
    _chain_recorded_visits()


def _chain_recorded_visits() -> None:
    """Chain the visits recorded before this revision, so verification covers them too
    (they are vouched for as they stand at migration time)."""
    bind = op.get_bind()
    rows: list[dict[str, object]] = []
    previous: tuple[int, str] | None = None
    loan: object = None
    for visit in bind.execute(_RECORDED).mappings():
        if visit["loan_id"] != loan:
            loan, previous = visit["loan_id"], None
        link = chain.next_link(previous, visit)
        previous = (link.seq, link.entry_hash)
        rows.append(
            {
                "visit_id": visit["visit_id"],
                "loan_id": visit["loan_id"],
                "seq": link.seq,
                "prev_hash": link.prev_hash,
                "payload_hash": link.payload_hash,
                "entry_hash": link.entry_hash,
            }
        )
    if rows:
        bind.execute(_INSERT, rows)


def downgrade() -> None:
    op.drop_table("visit_chain", schema="visits")
