"""visit tasks carry their loan's region; the dispatch queue is indexed by region and method

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "scheduler"
INDEX = "ix_visit_tasks_awaiting_dispatch"
AWAITING = "status = 'open' AND agent_id IS NULL AND method <> 'third_party'"


def upgrade() -> None:
    # The dispatcher reads waiting tasks region by region, only for the regions and methods
    # some agent covers: a backlog in a region with no agent (a new branch, a re-plan of a
    # portfolio nobody staffs yet) is never scanned, however large. The loan's region was
    # only on the loan, so every pass joined every waiting task to its loan.
    op.add_column("visit_tasks", sa.Column("region", sa.String(64), nullable=True), schema=SCHEMA)
    op.execute(
        "UPDATE scheduler.visit_tasks AS t SET region = l.region"
        " FROM scheduler.loans AS l WHERE l.loan_id = t.loan_id"
    )
    op.alter_column("visit_tasks", "region", nullable=False, schema=SCHEMA)
    op.drop_index(INDEX, table_name="visit_tasks", schema=SCHEMA)
    op.create_index(
        INDEX,
        "visit_tasks",
        ["region", "method", "due_on", "task_id"],
        schema=SCHEMA,
        postgresql_where=sa.text(AWAITING),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="visit_tasks", schema=SCHEMA)
    op.create_index(
        INDEX,
        "visit_tasks",
        ["due_on", "task_id"],
        schema=SCHEMA,
        postgresql_where=sa.text(AWAITING),
    )
    op.drop_column("visit_tasks", "region", schema=SCHEMA)
