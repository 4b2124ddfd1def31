"""The desk's lifecycle table, the legal stages' order and the tail's line: pure."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.alerts import lifecycle, resolutions, tail
from services.alerts.models import LegalStage
from shared.events import AlertRaised
from shared.vocabulary import AlertStatus, Category, RecommendedAction, Severity

S = AlertStatus


@pytest.mark.parametrize(
    ("start", "to", "name"),
    [
        (S.OPEN, S.ACKNOWLEDGED, "acknowledged"),
        (S.ACKNOWLEDGED, S.IN_PROGRESS, "started"),
        (S.IN_PROGRESS, S.RESOLVED, "resolved"),
        (S.ACKNOWLEDGED, S.RESOLVED, "resolved"),
        (S.OPEN, S.DISMISSED, "dismissed"),
        (S.IN_PROGRESS, S.DISMISSED, "dismissed"),
    ],
)
def test_the_table_allows_the_desks_moves(start: AlertStatus, to: AlertStatus, name: str) -> None:
    assert lifecycle.move(start, to) == name


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (S.OPEN, S.RESOLVED),  # nobody took it
        (S.OPEN, S.IN_PROGRESS),
        (S.IN_PROGRESS, S.ACKNOWLEDGED),  # no way back
        (S.RESOLVED, S.OPEN),
        (S.DISMISSED, S.ACKNOWLEDGED),
    ],
)
def test_every_other_move_is_refused_saying_what_is_allowed(
    start: AlertStatus, to: AlertStatus
) -> None:
    with pytest.raises(lifecycle.TransitionRefused) as refused:
        lifecycle.move(start, to)
    assert str(to) in str(refused.value)


def test_closed_alerts_move_nowhere() -> None:
    for closed in (S.RESOLVED, S.DISMISSED):
        assert not [pair for pair in lifecycle.TRANSITIONS if pair[0] == closed]


def test_legal_stages_go_one_at_a_time_in_order() -> None:
    assert resolutions.next_stage(LegalStage.REFERRED) == LegalStage.FILED
    assert resolutions.next_stage(LegalStage.JUDGMENT) == LegalStage.CLOSED
    assert resolutions.next_stage(LegalStage.CLOSED) is None


def test_a_plan_covers_the_arrears_only_in_full() -> None:
    assert resolutions.covers(Decimal("4200.00"), Decimal("4200.00"))
    assert not resolutions.covers(Decimal("4199.99"), Decimal("4200.00"))


def test_the_tail_prints_one_line_with_severity_rule_loan_and_action() -> None:
    alert = AlertRaised(
        loan_id="L-7",
        occurred_at=datetime(2026, 11, 30, 9, 15, tzinfo=UTC),
        alert_id=uuid.UUID(int=7),
        rule="dpd_90",
        category=Category.REPAYMENT,
        severity=Severity.CRITICAL,
        reason="loan 95 days past due",
        source_event_id=uuid.uuid4(),
        recommended_action=RecommendedAction.LEGAL_REVIEW,
    )
    line = tail.line(alert)
    assert line.startswith("2026-11-30 09:15:00 CRIT dpd_90")
    assert "loan L-7" in line and str(uuid.UUID(int=7)) in line
    assert line.endswith("→ legal_review: loan 95 days past due")
    assert "\n" not in line
