"""the agent's tasks index holds assigned tasks only

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "scheduler"
COLUMNS = ["agent_id", "status", "due_on"]


def upgrade() -> None:
    # Every read of it names an agent; tasks waiting for one (a re-plan writes millions) no
    # longer pay for an entry nobody looks up.
    op.drop_index("ix_visit_tasks_agent_status_due", table_name="visit_tasks", schema=SCHEMA)
    op.create_index(
        "ix_visit_tasks_agent_status_due",
        "visit_tasks",
        COLUMNS,
        schema=SCHEMA,
        postgresql_where=sa.text("agent_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_visit_tasks_agent_status_due", table_name="visit_tasks", schema=SCHEMA)
    op.create_index("ix_visit_tasks_agent_status_due", "visit_tasks", COLUMNS, schema=SCHEMA)
