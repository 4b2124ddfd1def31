"""Request validation of a visit capture: pure, no database."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.visits.schemas import VisitIn


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "task_id": None,
        "loan_id": "L-1",
        "method": "phone",
        "outcome": "completed",
        "started_at": "2026-11-20T10:00:00+08:00",
        "ended_at": "2026-11-20T10:15:00+08:00",
        "findings": {"identity_verified": True, "employment_status": "stable"},
    }
    return base | overrides


def error_locs(payload: dict[str, Any]) -> list[tuple[int | str, ...]]:
    with pytest.raises(ValidationError) as caught:
        VisitIn.model_validate(payload)
    return [err["loc"] for err in caught.value.errors()]


def test_a_phone_visit_needs_no_position() -> None:
    assert VisitIn.model_validate(body()).geo is None


def test_a_field_visit_with_position_is_valid() -> None:
    # Whether a field visit needs one is a capture rule (tests/unit/test_capture_rules.py).
    visit = VisitIn.model_validate(body(method="field", geo={"lat": 39.9, "lon": 116.4}))
    assert visit.geo is not None
    assert (visit.geo.lat, visit.geo.lon) == (39.9, 116.4)


@pytest.mark.parametrize("geo", [{"lat": 91, "lon": 0}, {"lat": 0, "lon": -181}])
def test_a_position_off_the_globe_is_refused(geo: dict[str, float]) -> None:
    assert error_locs(body(method="field", geo=geo))[0][0] == "geo"


def test_a_visit_cannot_end_before_it_started() -> None:
    assert error_locs(body(ended_at="2026-11-20T09:59:59+08:00")) == [("ended_at",)]


def test_a_visit_may_end_when_it_started() -> None:
    visit = VisitIn.model_validate(body(ended_at="2026-11-20T10:00:00+08:00"))
    assert visit.ended_at == visit.started_at


def test_times_without_offset_are_refused() -> None:
    assert ("started_at",) in error_locs(body(started_at="2026-11-20T10:00:00"))


def test_unknown_fields_are_refused_in_the_body_and_the_findings() -> None:
    assert error_locs(body(mood="good")) == [("mood",)]
    assert error_locs(body(findings={"vehicle_seen": True})) == [("findings", "vehicle_seen")]


def test_notes_are_limited() -> None:
    VisitIn.model_validate(body(notes="x" * 2000))
    assert error_locs(body(notes="x" * 2001)) == [("notes",)]
    assert error_locs(body(notes="a\x00b")) == [("notes",)]


def test_equal_bodies_hash_equal() -> None:
    # Key order, omitted defaults and the offset of an instant do not change the body.
    first = VisitIn.model_validate(body())
    reordered = dict(reversed(list(body().items())))
    again = VisitIn.model_validate(
        reordered
        | {
            "started_at": "2026-11-20T02:00:00Z",
            "findings": {
                "employment_status": "stable",
                "identity_verified": True,
                "encumbrance_detected": False,
            },
        }
    )
    assert first.request_hash() == again.request_hash()
    assert len(first.request_hash()) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"outcome": "refused"},
        {"notes": "borrower moved"},
        {"ended_at": "2026-11-20T10:16:00+08:00"},
        {"findings": {"identity_verified": False, "employment_status": "stable"}},
        {"task_id": "6f1c1f5e-8a57-4a3c-9a55-0f4b8f3c2d11"},
    ],
)
def test_different_bodies_hash_different(change: dict[str, Any]) -> None:
    assert (
        VisitIn.model_validate(body()).request_hash()
        != VisitIn.model_validate(body(**change)).request_hash()
    )
