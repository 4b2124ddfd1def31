"""third_party_reports: partners' reports beside the visits they became

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 15:25:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "third_party_reports",
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.Column("partner", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("report_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("loan_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["visit_id"],
            ["visits.visits.visit_id"],
            name=op.f("fk_third_party_reports_visit_id_visits"),
        ),
        sa.PrimaryKeyConstraint("visit_id", name=op.f("pk_third_party_reports")),
        sa.UniqueConstraint(
            "partner", "report_id", name="uq_third_party_reports_partner_report"
        ),
        schema="visits",
    )
    op.create_index(
        "ix_third_party_reports_loan_observed",
        "third_party_reports",
        ["loan_id", "observed_at"],
        unique=False,
        schema="visits",
    )


def downgrade() -> None:
    op.drop_index(
        "ix_third_party_reports_loan_observed", table_name="third_party_reports", schema="visits"
    )
    op.drop_table("third_party_reports", schema="visits")
