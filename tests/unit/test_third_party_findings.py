"""What each kind of partner report claims in the four key items (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest

from services.visits import third_party
from services.visits.reports import report_as_visit
from services.visits.schemas import FindingsIn, ReportKind, ThirdPartyReportIn

UNSET = FindingsIn().model_dump()


def claims(kind: str) -> dict[str, Any]:
    findings = third_party.findings_of(kind).model_dump()  # type: ignore[arg-type]
    return {k: v for k, v in findings.items() if v != UNSET[k]}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("gps_position", {}),
        ("device_offline", {"vehicle_sighted": False}),
        ("geofence_exit", {"vehicle_sighted": False}),
        ("dwell_at_pawn_lot", {"encumbrance_detected": True}),
        ("ride_hailing_registration", {"vehicle_usage": "ride_hailing"}),
        ("court_judgment", {"repayment_difficulty": True}),
    ],
)
def test_each_kind_claims_only_what_it_observed(kind: str, expected: dict[str, Any]) -> None:
    assert claims(kind) == expected
    # vehicle_condition stays unknown: a silent tracker is not a missing car.
    assert third_party.findings_of(kind).vehicle_condition == "unknown"  # type: ignore[arg-type]


def test_every_kind_is_mapped() -> None:
    for kind in get_args(ReportKind):
        third_party.findings_of(kind)


def test_a_report_becomes_a_third_party_visit_at_the_moment_observed() -> None:
    observed = datetime.now(UTC) - timedelta(minutes=30)
    body = ThirdPartyReportIn.model_validate(
        {
            "report_id": "R-1",
            "partner": "gps-partner",
            "kind": "geofence_exit",
            "loan_id": "L-1",
            "observed_at": observed.isoformat(),
            "details": {"position": {"lat": 30.1, "lon": 120.2}},
        }
    )
    visit = report_as_visit(body)
    assert (visit.method, visit.outcome, visit.task_id) == ("third_party", "completed", None)
    assert visit.started_at == visit.ended_at == observed
    assert visit.geo is not None and (visit.geo.lat, visit.geo.lon) == (30.1, 120.2)
    # The resend check covers the details, not just the findings they map to.
    moved = body.model_copy(update={"details": body.details.model_copy(update={"position": None})})
    assert moved.request_hash() != body.request_hash()
