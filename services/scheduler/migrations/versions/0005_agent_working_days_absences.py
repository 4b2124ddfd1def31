"""agents' working days and absences

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 17:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "scheduler"


def upgrade() -> None:
    # ISO weekdays (1 Monday .. 7 Sunday); every day until the lender says otherwise, so
    # agents saved before this revision keep being dispatched as they were.
    op.add_column(
        "agents",
        sa.Column(
            "working_days",
            sa.ARRAY(sa.SmallInteger()),
            server_default=sa.text("'{1,2,3,4,5,6,7}'::smallint[]"),
            nullable=False,
        ),
        schema=SCHEMA,
    )
    op.create_check_constraint(
        op.f("ck_agents_working_days"),
        "agents",
        "working_days <@ ARRAY[1, 2, 3, 4, 5, 6, 7]::smallint[]",
        schema=SCHEMA,
    )
    op.create_table(
        "agent_absences",
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=False),
        sa.CheckConstraint("ends_on >= starts_on", name=op.f("ck_agent_absences_span")),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            [f"{SCHEMA}.agents.agent_id"],
            name=op.f("fk_agent_absences_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("agent_id", "starts_on", name=op.f("pk_agent_absences")),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("agent_absences", schema=SCHEMA)
    op.drop_constraint(op.f("ck_agents_working_days"), "agents", type_="check", schema=SCHEMA)
    op.drop_column("agents", "working_days", schema=SCHEMA)
