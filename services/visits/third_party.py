"""What a partner's report means for the loan, in the four key items (issue 7).

Pure. A GPS or telematics platform, a ride-hailing registry or a credit bureau reports one
observation; it becomes a visit of method `third_party` whose findings the alert rules read
like any agent's. Only what the observation shows is claimed; everything else stays unset.
"""

from __future__ import annotations

from typing import Any

from services.visits.schemas import FindingsIn, ReportKind

_FINDINGS: dict[str, dict[str, Any]] = {
    # A position alone claims nothing: it is evidence for the next visit, kept with the report.
    "gps_position": {},
    # The tracker went silent or the car left its area: nobody can say where the car is.
    "device_offline": {"vehicle_sighted": False, "vehicle_condition": "unknown"},
    "geofence_exit": {"vehicle_sighted": False, "vehicle_condition": "unknown"},
    # Parked for hours at a pawn shop or used-car lot: the car is being pledged a second time.
    "dwell_at_pawn_lot": {"encumbrance_detected": True},
    "ride_hailing_registration": {"vehicle_usage": "ride_hailing"},
    # A new judgment against the borrower: other creditors are already in court.
    "court_judgment": {"repayment_difficulty": True},
}


def findings_of(kind: ReportKind) -> FindingsIn:
    return FindingsIn.model_validate(_FINDINGS[kind])
