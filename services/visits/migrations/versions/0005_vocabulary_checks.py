"""vocabulary checks: method, outcome, the findings' words and a report's kind

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 16:20:00

Each constraint is added NOT VALID (a brief lock: new rows are checked from then on) and
then validated, which scans the existing rows without blocking writes. The words are
written out here, not imported: a migration is history, and a word added to the
vocabulary later needs its own migration (tests/integration/test_visit_vocabulary.py
fails until it has one).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKS: dict[str, dict[str, str]] = {
    "visits": {
        "ck_visits_method": "method IN ('phone', 'field', 'third_party')",
        "ck_visits_outcome": "outcome IN ('completed', 'borrower_unreachable', 'refused')",
        "ck_visits_findings_employment_status": (
            "(findings ->> 'employment_status') IN ('stable', 'changed', 'unemployed', 'unknown')"
        ),
        "ck_visits_findings_income_change": (
            "(findings ->> 'income_change') IN ('same', 'increased', 'decreased', 'unknown')"
        ),
        "ck_visits_findings_vehicle_usage": (
            "(findings ->> 'vehicle_usage')"
            " IN ('private', 'commercial', 'ride_hailing', 'lent_out', 'unknown')"
        ),
        "ck_visits_findings_vehicle_condition": (
            "(findings ->> 'vehicle_condition') IN ('good', 'damaged', 'missing', 'unknown')"
        ),
    },
    "third_party_reports": {
        "ck_third_party_reports_kind": (
            "kind IN ('gps_position', 'device_offline', 'geofence_exit', 'dwell_at_pawn_lot',"
            " 'ride_hailing_registration', 'court_judgment')"
        ),
    },
}


def upgrade() -> None:
    for table, checks in CHECKS.items():
        for name, condition in checks.items():
            op.execute(
                f"ALTER TABLE visits.{table} ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID"
            )
            op.execute(f"ALTER TABLE visits.{table} VALIDATE CONSTRAINT {name}")


def downgrade() -> None:
    for table, checks in CHECKS.items():
        for name in checks:
            op.execute(f"ALTER TABLE visits.{table} DROP CONSTRAINT {name}")
