"""loans' regions from `loan-registered`, and the visits worker's inbox

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 19:30:00

- `visits.loan_regions`: each loan's region as `loan-registered` announced it, the visits
  worker's projection (services/visits/regions.py). As it fills, the worker sets the
  region of the loan's visits recorded before 0006 (NULL until then), so that their
  region's supervisors read them. Nothing is read from another service's schema.
- `visits.inbox`: the events the worker's consumer applied, as the other services keep.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "loan_regions",
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("loan_id", name=op.f("pk_loan_regions")),
        schema="visits",
    )
    op.create_table(
        "inbox",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column(
            "processed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_inbox")),
        schema="visits",
    )


def downgrade() -> None:
    op.drop_table("inbox", schema="visits")
    op.drop_table("loan_regions", schema="visits")
