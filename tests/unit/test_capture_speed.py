"""The capture path's shortcuts keep their guarantees: a remembered token is refused once it
expires or past the short TTL, and only valid tokens are remembered; a log line's masking
is the same whether its arguments are masked alone or the line whole."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.visits import service
from services.visits.schemas import VisitIn, VisitOut
from shared.auth import VERIFIED, VerifiedTokens, authenticate, issue_token
from shared.errors import Problem
from shared.logging import CheckedId, JsonFormatter, request_id_var, scrub
from tests.support import PHONE_FINDINGS

SECRET = "capture-speed-test-secret-0123456789"
LIFETIME = timedelta(hours=12)


def test_a_verified_token_is_remembered_until_its_exp_and_no_longer_than_the_ttl() -> None:
    cache = VerifiedTokens(max_entries=2, ttl_seconds=60)
    principal = authenticate(
        f"Bearer {issue_token(SECRET, 'AG-1', 'agent')}", SECRET, max_lifetime=LIFETIME
    )
    key = ("t", SECRET, LIFETIME)
    cache.add(key, principal, exp=1_000.0, now=990.0)
    assert cache.get(key, now=999.9) == principal
    assert cache.get(key, now=1_000.0) is None  # exp reached: decoded (and refused) again
    cache.add(key, principal, exp=10_000.0, now=1_000.0)
    assert cache.get(key, now=1_059.0) == principal
    assert cache.get(key, now=1_060.0) is None  # the TTL, however far the exp


def test_the_token_cache_is_bounded_least_recently_used_first() -> None:
    cache = VerifiedTokens(max_entries=2, ttl_seconds=60)
    principal = authenticate(
        f"Bearer {issue_token(SECRET, 'AG-1', 'agent')}", SECRET, max_lifetime=LIFETIME
    )
    keys = [(name, SECRET, LIFETIME) for name in ("a", "b", "c")]
    cache.add(keys[0], principal, exp=100.0, now=0.0)
    cache.add(keys[1], principal, exp=100.0, now=0.0)
    assert cache.get(keys[0], now=1.0) == principal  # a used: b is the oldest now
    cache.add(keys[2], principal, exp=100.0, now=1.0)
    assert cache.get(keys[1], now=2.0) is None
    assert cache.get(keys[0], now=2.0) == principal
    assert cache.get(keys[2], now=2.0) == principal


def test_a_remembered_token_is_not_honoured_under_another_secret() -> None:
    token = issue_token(SECRET, "AG-2", "agent")
    assert authenticate(f"Bearer {token}", SECRET, max_lifetime=LIFETIME).sub == "AG-2"
    with pytest.raises(Problem) as refused:
        authenticate(f"Bearer {token}", SECRET + "-rotated", max_lifetime=LIFETIME)
    assert refused.value.status == 401


def test_a_refused_token_is_not_remembered() -> None:
    VERIFIED.clear()
    expired = issue_token(SECRET, "AG-3", "agent", ttl=timedelta(seconds=-5))
    for _ in range(2):
        with pytest.raises(Problem):
            authenticate(f"Bearer {expired}", SECRET, max_lifetime=LIFETIME)
    assert VERIFIED.get((expired, SECRET, LIFETIME), now=0.0) is None


def _line(message: str, *args: object) -> str:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, message, args, None)
    return str(JsonFormatter("visits").format(record))


def test_log_arguments_masked_alone_mask_as_the_whole_line_did() -> None:
    visit_id = uuid.UUID("0f9c2a8e-41b7-4d2a-9e61-3c5b7a9d1e24")
    cases: list[tuple[str, tuple[object, ...]]] = [
        ("visit %s recorded for loan %s (task %s)", (visit_id, "L-1", None)),
        ("borrower phone %s", ("13812345678",)),
        ("national id %s on loan %s", ("11010519491231002X", "L-13812345678")),
        ("number %d", (13812345678,)),
        ("flag %s", (True,)),
    ]
    for message, args in cases:
        assert f'"message": "{scrub(message % args)}"' in _line(message, *args)
    # A UUID is an id, never a number to hide, even one that happens to be all digits.
    digits_only = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert str(digits_only) in _line("visit %s", digits_only)
    assert "5678" in _line("borrower phone %s", "13812345678")
    assert "13812345678" not in _line("borrower phone %s", "13812345678")


def test_only_the_edges_checked_request_id_skips_masking() -> None:
    token = request_id_var.set("13812345678")
    try:
        assert "13812345678" not in _line("x")
    finally:
        request_id_var.reset(token)
    token = request_id_var.set(CheckedId("abc-123"))
    try:
        assert '"request_id": "abc-123"' in _line("x")
    finally:
        request_id_var.reset(token)


def test_a_created_visits_view_is_the_validated_one() -> None:
    now = datetime.now(UTC)
    bodies: list[dict[str, object]] = [
        {"method": "phone", "findings": PHONE_FINDINGS, "notes": None},
        {
            "method": "phone",
            "findings": PHONE_FINDINGS,
            "notes": "借款人电话 13812345678 在家",
            "task_id": str(uuid.uuid4()),
            "visit_id": str(uuid.uuid4()),
            "geo": {"lat": 31.2, "lon": 121.5},
        },
    ]
    for extra in bodies:
        body = VisitIn.model_validate(
            {
                "loan_id": "L-1",
                "outcome": "completed",
                "started_at": (now - timedelta(minutes=10)).isoformat(),
                "ended_at": (now - timedelta(minutes=5)).isoformat(),
                **extra,
            }
        )
        row = service._new_values("AG-1", "key-1", body, "R-1", body.request_hash(), None)
        validated = VisitOut.model_validate({**row, "geo": body.geo})
        assert service.created_view(row, body).model_dump_json() == validated.model_dump_json()
        assert "13812345678" not in service.created_view(row, body).model_dump_json()
