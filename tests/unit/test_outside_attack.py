"""Pure parts of the fixes for the outside attack: the PII masker's number rule, agent
subs, what the owner's answers mean to a service client, the log formatter and uvicorn's
access log, and what the OpenAPI documents now say. No database."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import sys
import time

import httpx
import jwt
import pytest
import uvicorn.config
from fastapi import FastAPI, Response

from services.scheduler.main import build_app as scheduler_app
from services.scheduler.settings import SchedulerSettings
from services.visits.main import build_app as visits_app
from services.visits.settings import VisitsSettings
from shared.auth import decode_token, issue_token
from shared.errors import MAX_ERRORS, Problem, problem_body
from shared.logging import JsonFormatter, configure_logging, request_id_var
from shared.middleware import request_id
from shared.pii import mask_pii
from shared.service_client import OwnerUnavailable, ServiceClient

SECRET = "a-long-enough-test-secret-for-hs256!"

# --- finding 6: any run of nine digits or more, however it is typed -----------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("138 - 1234 - 5678", "*******5678"),
        ("+86 (138) 1234 5678", "*********5678"),
        ("(010) 88888888", "(*******8888"),
        ("+86 21 6234 5678", "********5678"),
        ("138/1234/5678", "*******5678"),
        ("138_1234_5678", "*******5678"),
        ("138\n1234\n5678", "*******5678"),
        ("138\u200b1234\u200b5678", "*******5678"),  # zero-width space
        ("138\u00ad1234\u00ad5678", "*******5678"),  # soft hyphen
        ("1\u200b3\u200b8\u200b12345678", "*******5678"),
        ("110 101 199 003 074 512", "**************4512"),
        ("1101 0119 9003 0745 12", "**************4512"),
        ("身份证 110101 1990 0307 451X 核实", "身份证 **************451X 核实"),
        ("电话：１３８－１２３４－５６７８。", "电话：*******5678。"),
        ("tel13812345678", "tel*******5678"),
        ("card 6222 0212 3456 7890 123", "card ***************0123"),
        ("not an id " + "1" * 32, "not an id " + "*" * 28 + "1111"),  # hex-shaped, all digits
    ],
)
def test_every_grouping_of_a_long_number_is_masked_to_its_last_four_digits(
    text: str, masked: str
) -> None:
    assert mask_pii(text) == masked
    assert mask_pii(masked) == masked  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "due 2026-11-30, paid 12000.00",
        "visited 2026/11/30 at 10:00, 2 km from the address",
        "installment 3 of 36, 95 days past due",
        "raised at 2026-11-30 14:05:09.123456+00:00 and 2026-11-30T14:05:09Z",
        "event 550e8400-e29b-41d4-a716-446655440000",
        "request 9f3c1a2b445566778899001122ccddee",
        "order 12345678",  # eight digits
    ],
)
def test_dates_amounts_and_ids_stay_readable(text: str) -> None:
    assert mask_pii(text) == text


# --- finding 7: request ids and log context -----------------------------------------------


@pytest.mark.parametrize("offered", ["110101199003074512", "138-1234-5678", "x" * 129, "a b", ""])
def test_a_request_id_the_masker_would_change_is_replaced(offered: str) -> None:
    chosen = request_id(offered)
    assert chosen != offered
    assert mask_pii(chosen) == chosen  # the generated one survives the masker


def test_a_plain_request_id_is_kept() -> None:
    assert request_id("trace-42") == "trace-42"


def test_every_context_field_of_a_log_line_is_masked() -> None:
    token = request_id_var.set("13812345678")
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
        line = json.loads(JsonFormatter("api").format(record))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "*******5678"


# --- finding 2b: an agent's sub is an agent id --------------------------------------------


@pytest.mark.parametrize("sub", ["ag.1@x", "AG:1", "ag@lender", "service:visits"])
def test_an_agent_token_must_name_a_valid_agent_id(sub: str) -> None:
    with pytest.raises(Problem) as caught:
        decode_token(SECRET, issue_token(SECRET, sub, "agent"))
    assert caught.value.status == 401
    # The wider pattern stays for people and services of other roles.
    assert decode_token(SECRET, issue_token(SECRET, sub, "integration")).sub == sub


def test_an_expired_token_is_still_refused() -> None:
    now = int(time.time())
    token = jwt.encode({"sub": "AG-1", "role": "agent", "iat": now - 99, "exp": now - 9}, SECRET)
    with pytest.raises(Problem):
        decode_token(SECRET, token)


# --- finding 2: what the owner's answers mean ---------------------------------------------


def answering(status: int) -> ServiceClient:
    app = FastAPI()

    @app.get("/v1/loans/{loan_id}")
    async def loan(loan_id: str) -> Response:
        return Response('{"detail": "x"}', status_code=status, media_type="application/json")

    return ServiceClient(
        base_url="http://owner",
        jwt_secret=SECRET,
        caller="test",
        retries=0,
        transport=httpx.ASGITransport(app=app),
    )


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_the_owner_saying_no_such_resource_is_none(status: int) -> None:
    client = answering(status)
    try:
        assert await client.get_json("/v1/loans/import") is None
    finally:
        await client.aclose()


@pytest.mark.parametrize("status", [401, 403, 409, 429, 500, 503])
async def test_the_owner_refusing_our_token_or_failing_is_unavailability(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    client = answering(status)
    try:
        with pytest.raises(OwnerUnavailable):
            await client.get_json("/v1/loans/L-1")
    finally:
        await client.aclose()
    if status in (401, 403):
        assert any(r.levelno == logging.ERROR and "token" in r.message for r in caplog.records)


# --- finding 4c: a problem lists at most fifty errors -------------------------------------


def test_a_problem_lists_at_most_fifty_errors() -> None:
    errors = [{"field": f"body.k{i}", "message": "extra"} for i in range(500_000)]
    body = problem_body("/v1/x", 422, "Unprocessable Content", "invalid", errors=errors)
    assert len(body["errors"]) == MAX_ERRORS
    assert body["detail"] == f"invalid ({500_000 - MAX_ERRORS} more errors not listed)"


# --- finding 11: uvicorn's `--no-access-log` is respected ---------------------------------


def test_no_access_log_stays_off(restored_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # What `uvicorn --no-access-log` does before it imports the app.
    config = uvicorn.config.Config("x:app", access_log=False)
    config.configure_logging()
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    configure_logging("visits")
    access = logging.getLogger("uvicorn.access")
    # uvicorn decides per connection with `hasHandlers()` whether to log access at all.
    assert not access.hasHandlers()
    access.info('%s - "%s %s"', "127.0.0.1", "GET", "/v1/tasks")
    logging.getLogger("uvicorn.error").info("started")
    lines = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert [line["logger"] for line in lines] == ["uvicorn.error"]


# --- finding 9, 11: the documents say it ------------------------------------------------------


def test_the_documents_state_date_bounds_key_pattern_and_body_limits() -> None:
    scheduler = scheduler_app(SchedulerSettings(env="test")).openapi()
    vehicle = scheduler["components"]["schemas"]["VehicleIn"]["properties"]["valued_on"]
    assert (vehicle["formatMinimum"], vehicle["formatMaximum"]) == ("2000-01-01", "2099-12-31")
    assert "413" in scheduler["paths"]["/v1/loans/{loan_id}"]["put"]["responses"]
    visits = visits_app(VisitsSettings(env="test")).openapi()
    operation = visits["paths"]["/v1/visits"]["post"]
    [key] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert key["schema"]["pattern"] == r"^[\x21-\x7e]{1,255}$"
    assert {"400", "413"} <= set(operation["responses"])
