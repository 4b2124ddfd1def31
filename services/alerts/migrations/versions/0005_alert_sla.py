"""the acknowledgement SLA: when an alert took its severity, when it went to the
supervisor queue

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "alerts"


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.add_column("alerts", sa.Column("severity_since", ts, nullable=True), schema=SCHEMA)
    op.add_column("alerts", sa.Column("supervisor_queue_at", ts, nullable=True), schema=SCHEMA)
    # Alerts from before: their severity is as old as they are.
    op.execute(f"UPDATE {SCHEMA}.alerts SET severity_since = created_at")
    op.alter_column("alerts", "severity_since", nullable=False, schema=SCHEMA)
    op.create_index(
        "ix_alerts_sla_pending",
        "alerts",
        ["severity", "severity_since"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'open' AND supervisor_queue_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_alerts_sla_pending", table_name="alerts", schema=SCHEMA)
    op.drop_column("alerts", "supervisor_queue_at", schema=SCHEMA)
    op.drop_column("alerts", "severity_since", schema=SCHEMA)
