"""The alerts service's batch pieces that need no database: which facts of a batch win,
the vocabulary's CHECKs as the migrations wrote them, and no remote call on the event path."""

from __future__ import annotations

import ast
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import CheckConstraint, Table

from services.alerts import models, repository, service
from services.alerts.service import latest_per_loan
from shared.events import LoanRegistered
from shared.vocabulary import (
    AgreedUsage,
    AlertStatus,
    Category,
    CreditGrade,
    RecommendedAction,
    Severity,
)

ALERTS = Path(models.__file__).resolve().parent
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def _facts(loan_id: str, at: datetime, usage: AgreedUsage) -> LoanRegistered:
    return LoanRegistered(
        loan_id=loan_id,
        occurred_at=at,
        region="R-1",
        credit_grade=CreditGrade.B,
        agreed_usage=usage,
        principal=Decimal("80000.00"),
        term_months=36,
        disbursed_on=date(2026, 10, 15),
        valuation=Decimal("98000.00"),
    )


def test_the_newest_facts_of_each_loan_win_in_a_batch() -> None:
    newer = _facts("L-1", T0, AgreedUsage.RIDE_HAILING)
    older = _facts("L-1", T0 - timedelta(hours=1), AgreedUsage.PRIVATE)
    other = _facts("L-2", T0, AgreedUsage.COMMERCIAL)
    assert latest_per_loan([newer, other, older]) == [newer, other]


def test_on_a_tie_the_later_event_of_the_partition_wins() -> None:
    first = _facts("L-1", T0, AgreedUsage.PRIVATE)
    second = _facts("L-1", T0, AgreedUsage.COMMERCIAL)
    assert latest_per_loan([first, second]) == [second]
    assert latest_per_loan([]) == []


def _string_constants(path: Path) -> set[str]:
    """Every string literal of a module (adjacent literals are one constant)."""
    tree = ast.parse(path.read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_every_check_of_the_models_is_written_literally_in_a_migration() -> None:
    written: set[str] = set()
    for migration in (ALERTS / "migrations" / "versions").glob("*.py"):
        written |= _string_constants(migration)
    checks = {
        f"{table.name}.{constraint.name}": str(constraint.sqltext)
        for table in models.metadata.tables.values()
        if isinstance(table, Table)
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint)
    }
    assert {"alerts.ck_alerts_recommended_action", "loan_facts.ck_loan_facts_agreed_usage"} <= set(
        checks
    )
    assert {name: text for name, text in checks.items() if text not in written} == {}


def test_the_alerts_service_calls_no_other_service() -> None:
    imported: set[str] = set()
    for module in ALERTS.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
    assert "shared.events" in imported  # the scan sees the imports
    assert {"httpx", "shared.service_client"} & imported == set()


def test_an_active_alert_read_as_a_row_is_the_alert_triage_works_on() -> None:
    """The batch reads active alerts as plain rows in `ALERT_ROW_COLUMNS` order; each
    column must land in its own field, enums as enums."""
    values: dict[str, object] = {
        "alert_id": uuid.uuid4(),
        "loan_id": "L-1",
        "family": "arrears",
        "rule": "dpd_30",
        "category": "repayment",
        "severity": "medium",
        "recommended_action": "phone_visit",
        "status": "acknowledged",
        "reason": "35 days past due",
        "facts": {"days_past_due": 35},
        "rule_version": 3,
        "source_event_id": uuid.uuid4(),
        "created_at": T0,
        "occurrences": 4,
        "last_seen_at": T0 + timedelta(days=1),
        "last_raised_at": T0 + timedelta(days=2),
        "severity_since": T0 + timedelta(days=3),
        "resolved_at": T0 + timedelta(days=4),
        "resolved_by": "desk",
        "resolution_action": "payment_plan",
        "resolution_note": "note",
    }
    assert set(values) == set(repository.ALERT_ROW_COLUMNS)
    state = service._state(tuple(values[name] for name in repository.ALERT_ROW_COLUMNS))
    assert {name: getattr(state, name) for name in values} == values
    assert isinstance(state.status, AlertStatus) and isinstance(state.category, Category)
    assert isinstance(state.severity, Severity)
    assert isinstance(state.recommended_action, RecommendedAction)
