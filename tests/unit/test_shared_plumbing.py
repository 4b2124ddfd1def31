"""Auth, PII handling, settings and log scrubbing: no I/O."""

from __future__ import annotations

import base64
import gc
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from shared import heap
from shared.auth import decode_token, issue_token
from shared.errors import Problem
from shared.logging import JsonFormatter, scrub
from shared.pagination import decode_cursor, encode_cursor
from shared.pii import PiiCipher, mask_name, mask_tail
from shared.settings import DEV_PII_KEY, ServiceSettings

SECRET = "a-long-enough-test-secret-for-hs256!"


def test_token_round_trip_and_rejections() -> None:
    principal = decode_token(SECRET, issue_token(SECRET, "agent-7", "agent"))
    assert (principal.sub, principal.role, principal.is_agent) == ("agent-7", "agent", True)
    with pytest.raises(Problem) as wrong_secret:
        decode_token(SECRET + "-other", issue_token(SECRET, "a", "ops"))
    assert wrong_secret.value.status == 401
    with pytest.raises(Problem) as expired:
        decode_token(SECRET, issue_token(SECRET, "a", "ops", ttl=timedelta(seconds=-5)))
    assert expired.value.status == 401


def test_pii_is_encrypted_not_encoded() -> None:
    cipher = PiiCipher(DEV_PII_KEY)
    token = cipher.encrypt("110101199003074512")
    assert "110101199003074512" not in token
    assert cipher.decrypt(token) == "110101199003074512"


def test_masks() -> None:
    assert mask_tail("110101199003074512") == "**************4512"
    assert mask_tail("13812345678") == "*******5678"
    assert mask_tail("123") == "***"
    assert mask_name("王建国") == "王**"
    assert mask_name("Li") == "L*"


def test_production_refuses_development_secrets() -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        ServiceSettings(env="production")
    with pytest.raises(ValidationError, match="PII_KEY"):
        ServiceSettings(env="production", jwt_secret=SECRET)
    ok = ServiceSettings(
        env="production", jwt_secret=SECRET, pii_key=Fernet.generate_key().decode()
    )
    assert ok.env == "production"


def test_logs_never_carry_national_id_or_mobile() -> None:
    assert scrub("id 110101199003074512 tel 13812345678") == "id **************4512 tel *******5678"
    record = logging.LogRecord("x", logging.INFO, "f", 1, "borrower 13812345678", None, None)
    assert "13812345678" not in JsonFormatter("t").format(record)


def test_cursor_round_trip_and_forged_cursors_are_422() -> None:
    ident, at = uuid.uuid4(), datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
    decoded = decode_cursor(encode_cursor(at, ident))
    assert decoded is not None and (decoded.created_at, decoded.ident) == (at, ident)
    assert decode_cursor(None) is None
    forged = [
        "not-base64!",
        base64.urlsafe_b64encode(json.dumps(["2026-11-29T08:00:00", str(ident)]).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps([at.isoformat(), "x"]).encode()).decode(),
        base64.urlsafe_b64encode(b"{}").decode(),
    ]
    for cursor in forged:
        with pytest.raises(Problem) as problem:
            decode_cursor(cursor)
        assert problem.value.status == 422


def test_a_started_process_freezes_its_heap_and_collects_rarely() -> None:
    before = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_threshold() == heap.THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
