"""worker heartbeats, broker positions and losses (read by /readyz, shared/health.py)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 14:07:43.337419
"""

from collections.abc import Sequence

from shared.health_migration import create_health_tables, drop_health_tables

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_health_tables("visits")


def downgrade() -> None:
    drop_health_tables("visits")
