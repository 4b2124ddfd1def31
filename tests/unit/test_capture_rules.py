"""The capture rules per method and outcome (services/visits/capture_rules.py): pure."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.visits.capture_rules import violations
from services.visits.schemas import VisitIn
from tests.support import CLEAN_FINDINGS

GEO = {"lat": 31.23, "lon": 121.47}
PHONE_FINDINGS = {**CLEAN_FINDINGS, "vehicle_sighted": None}
PHOTO = uuid.uuid4()


def visit(**overrides: Any) -> VisitIn:
    started = datetime.now(UTC) - timedelta(hours=1)
    body: dict[str, Any] = {
        "loan_id": "L-1",
        "method": "field",
        "outcome": "completed",
        "started_at": started.isoformat(),
        "ended_at": (started + timedelta(minutes=30)).isoformat(),
        "findings": dict(CLEAN_FINDINGS),
        "geo": GEO,
        "evidence": [str(PHOTO)],
    }
    return VisitIn.model_validate(body | overrides)


def fields(body: VisitIn) -> list[str]:
    return [error["field"] for error in violations(body)]


def test_complete_visits_of_each_method_pass() -> None:
    assert fields(visit()) == []
    assert fields(visit(method="phone", geo=None, findings=PHONE_FINDINGS)) == []
    # A phone call may say the car was not seen: that is no claim to have seen it.
    assert fields(visit(method="phone", findings={"vehicle_sighted": False})) == []


def test_a_field_visit_names_both_position_and_sighting() -> None:
    findings = {**CLEAN_FINDINGS, "vehicle_sighted": None}
    assert fields(visit(geo=None, findings=findings)) == [
        "body.geo",
        "body.findings.vehicle_sighted",
    ]
    # Not sighted is an answer: the car was not there.
    assert fields(visit(findings={**CLEAN_FINDINGS, "vehicle_sighted": False})) == []


def test_a_completed_field_visit_lists_a_photo_and_others_need_none() -> None:
    assert fields(visit(evidence=[])) == ["body.evidence"]
    nobody_home = {"vehicle_sighted": False}
    assert fields(visit(evidence=[], outcome="borrower_unreachable", findings=nobody_home)) == []
    assert fields(visit(evidence=[], outcome="refused")) == []
    assert fields(visit(evidence=[], method="phone", geo=None, findings=PHONE_FINDINGS)) == []


def test_a_visit_lists_at_most_20_pieces_of_evidence_each_once() -> None:
    with pytest.raises(ValueError, match="at most 20"):
        visit(evidence=[str(uuid.uuid4()) for _ in range(21)])
    with pytest.raises(ValueError, match="same evidence twice"):
        visit(evidence=[str(PHOTO), str(PHOTO)])


def test_a_body_without_evidence_hashes_as_before_evidence_existed() -> None:
    # A capture queued on a phone before this change is retried with the same hash.
    without = visit(evidence=[], method="phone", geo=None, findings=PHONE_FINDINGS)
    # Nor before the client-generated visit id existed (left out when not sent).
    dumped = without.model_dump(mode="json", exclude={"evidence", "visit_id"})

    canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert without.request_hash() == hashlib.sha256(canonical.encode()).hexdigest()
    assert visit().request_hash() != visit(evidence=[str(uuid.uuid4())]).request_hash()


def test_a_phone_visit_cannot_sight_the_car() -> None:
    assert fields(visit(method="phone", geo=None)) == ["body.findings.vehicle_sighted"]


def test_an_unreachable_borrower_needs_no_findings() -> None:
    nobody_home = visit(outcome="borrower_unreachable", findings={"vehicle_sighted": False})
    assert fields(nobody_home) == []
    no_answer = visit(method="phone", geo=None, outcome="borrower_unreachable", findings={})
    assert fields(no_answer) == []


def test_an_unreachable_borrower_claims_nothing_the_borrower_would_tell() -> None:
    claimed = {
        "identity_verified": True,
        "employment_status": "stable",
        "income_change": "same",
        "collateral_documents_intact": True,
        "repayment_difficulty": True,
        "vehicle_sighted": True,
        "vehicle_usage": "ride_hailing",
        "vehicle_condition": "missing",
        "encumbrance_detected": True,
    }
    # In the field the car is still seen, or found missing, without the borrower.
    assert fields(visit(outcome="borrower_unreachable", findings=claimed)) == [
        f"body.findings.{item}"
        for item in (
            "identity_verified",
            "employment_status",
            "income_change",
            "collateral_documents_intact",
            "repayment_difficulty",
        )
    ]
    on_the_phone = fields(
        visit(method="phone", geo=None, outcome="borrower_unreachable", findings=claimed)
    )
    assert sorted(on_the_phone) == sorted(f"body.findings.{item}" for item in claimed), on_the_phone


@pytest.mark.parametrize("outcome", ["completed", "refused", "borrower_unreachable"])
def test_agents_cannot_file_third_party_visits(outcome: str) -> None:
    body = visit(method="third_party", outcome=outcome, findings={})
    assert "body.method" in fields(body)
