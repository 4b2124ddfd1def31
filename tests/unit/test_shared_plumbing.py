"""Auth, PII handling, settings and log scrubbing: no I/O."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from shared.auth import decode_token, issue_token
from shared.errors import Problem
from shared.logging import JsonFormatter, scrub
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
