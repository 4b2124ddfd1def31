"""Strict tokens, PII masking of free text and logs, the shared validation types, log routing
of the server's own loggers, and the OpenAPI document: no I/O."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import jwt
import pytest
import uvicorn.config
from pydantic import BaseModel, ValidationError

from services.alerts.main import build_app as alerts_app
from services.alerts.settings import AlertsSettings
from services.scheduler.main import build_app as scheduler_app
from services.scheduler.schemas import LoanOut
from services.scheduler.settings import SchedulerSettings
from services.visits.main import build_app as visits_app
from services.visits.settings import VisitsSettings
from shared.auth import Principal, decode_token, issue_token
from shared.errors import Problem, is_unavailable
from shared.logging import configure_logging, scrub
from shared.pii import mask_pii
from shared.validation import (
    BusinessDate,
    Identifier,
    LoanId,
    Money,
    NationalId,
    Note,
    ObservedAt,
    Phone,
    SingleLineText,
)

SECRET = "a-long-enough-test-secret-for-hs256!"


# --- defect 6: strict tokens --------------------------------------------------------------


def forged(**claims: Any) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": "desk-1", "role": "ops", "iat": now, "exp": now + 600} | claims, SECRET
    )


def rejected(token: str, **kwargs: Any) -> str:
    with pytest.raises(Problem) as caught:
        decode_token(SECRET, token, **kwargs)
    assert caught.value.status == 401
    assert caught.value.headers == {"WWW-Authenticate": "Bearer"}
    return str(caught.value.detail)


def test_exp_and_iat_must_be_numbers() -> None:
    later = int(time.time()) + 600
    assert "numbers" in rejected(forged(exp=str(later)))
    assert "numbers" in rejected(forged(iat=str(int(time.time()))))
    assert "iat" in rejected(jwt.encode({"sub": "a", "role": "ops", "exp": later}, SECRET))
    rejected(forged(exp=True))
    rejected(forged(exp=1e400))


@pytest.mark.parametrize("sub", ["", " ", "a" * 65, "AG-1\x00", "名字", "a b", 7])
def test_sub_must_be_a_short_safe_identifier(sub: object) -> None:
    rejected(forged(sub=sub))


def test_a_token_cannot_live_longer_than_the_maximum() -> None:
    now = int(time.time())
    assert "longer" in rejected(forged(exp=now + 100 * 365 * 86400))
    # Backdated iat does not help, nor does a short claimed life far in the future.
    assert "longer" in rejected(forged(iat=now - 3600, exp=now + 13 * 3600))
    rejected(forged(iat=now, exp=now + 3 * 3600), max_lifetime=timedelta(hours=2))
    assert decode_token(SECRET, forged(exp=now + 11 * 3600)).sub == "desk-1"


def test_a_supervisor_token_carries_its_region() -> None:
    token = issue_token(SECRET, "sup-1", "supervisor", region="SH")
    assert decode_token(SECRET, token) == Principal("sup-1", "supervisor", "SH")
    assert decode_token(SECRET, issue_token(SECRET, "desk-1", "ops")).region is None
    rejected(forged(role="supervisor", region="S\x00H"))
    rejected(forged(role="supervisor", region=["SH"]))


def test_service_and_people_subs_are_accepted() -> None:
    for sub in ("service:visits", "ops.desk@lender", "AG-17", "core-banking"):
        assert decode_token(SECRET, issue_token(SECRET, sub, "ops")).sub == sub


# --- defect 7: one masking function -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("tel 13812345678", "tel *******5678"),
        ("+8613812345678", "*********5678"),
        ("138-1234-5678", "*******5678"),
        ("+86 138 1234 5678 again", "*********5678 again"),
        ("0086 13812345678", "***********5678"),
        ("１３８１２３４５６７８", "*******5678"),  # full-width
        ("١٣٨١٢٣٤٥٦٧٨", "*******5678"),  # Arabic-Indic
        ("＋８６ １３８ １２３４ ５６７８", "*********5678"),
        ("id 110101199003074512.", "id **************4512."),
        ("身份证110101 19900307 451X", "身份证**************451X"),
        ("landline 010-12345678", "landline *******5678"),
        ("card 6222021234567890123", "card ***************0123"),
    ],
)
def test_mask_pii_catches_numbers_however_they_are_typed(text: str, masked: str) -> None:
    assert mask_pii(text) == masked
    assert mask_pii(masked) == masked  # idempotent
    assert scrub(text) == masked  # the log scrubber is the same function


@pytest.mark.parametrize(
    "text",
    [
        "paid 12000.00 on 2026-11-29 at 10:00",
        "loan L-1 installment 3, 95 days past due",
        "event 550e8400-e29b-41d4-a716-446655440000",
        "王建国 says the car is in the garage",
    ],
)
def test_mask_pii_leaves_ordinary_text_alone(text: str) -> None:
    assert mask_pii(text) == text


# --- defect 4, 5, 8: the shared validation types ------------------------------------------


class Sample(BaseModel):
    ident: Identifier | None = None
    loan: LoanId | None = None
    line: SingleLineText | None = None
    note: Note | None = None
    money: Money | None = None
    day: BusinessDate | None = None
    seen: ObservedAt | None = None
    national_id: NationalId | None = None
    phone: Phone | None = None


def refused(**fields: Any) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        Sample.model_validate(fields)
    return [str(err["loc"][0]) for err in caught.value.errors()]


@pytest.mark.parametrize(
    "fields",
    [
        {"ident": "L\x00x"},
        {"ident": "x" * 65},
        {"ident": ""},
        {"loan": "import"},
        {"line": "a\x00b"},
        {"line": "two\nlines"},
        {"line": "bell\x07"},
        {"note": "nul\x00"},
        {"note": "x" * 2001},
        {"money": ""},
        {"money": 12.5},
        {"money": "1e3"},
        {"money": "-1.00"},
        {"money": "1.001"},
        {"money": "12345678901234567.00"},
        {"day": "9999-12-31"},
        {"day": "1999-12-31"},
        {"seen": "0001-01-01T00:00:00+00:00"},
        {"seen": "9999-12-31T23:59:59+00:00"},
        {"seen": "2026-01-01T00:00:00"},  # no offset
        {"national_id": "１１０１０１１９９００３０７４５１２"},
        {"phone": "١٣٨١٢٣٤٥٦٧٨"},
    ],
)
def test_hostile_values_are_refused_naming_the_field(fields: dict[str, Any]) -> None:
    assert refused(**fields) == list(fields)


def test_good_values_pass_and_travel_as_they_should() -> None:
    now = datetime.now(UTC)
    ok = Sample(
        ident="AG_1-x",
        loan="L-import",
        line="沪A12345",
        note="第一行\n第二行\t电话 13812345678",
        money="12000.5",
        day=date(2026, 11, 1),
        seen=(now + timedelta(minutes=4)).isoformat(),
        national_id="11010119900307451X",
        phone="+8613812345678",
    )
    assert ok.note == "第一行\n第二行\t电话 *******5678"
    assert ok.money == Decimal("12000.5")
    assert ok.model_dump(mode="json")["money"] == "12000.5"
    assert ok.seen is not None and ok.seen.tzinfo == UTC


def test_money_is_a_decimal_string_in_responses() -> None:
    schema = LoanOut.model_json_schema(mode="serialization")["$defs"]["BorrowerOut"]
    income = schema["properties"]["monthly_income"]
    assert income["type"] == "string" and income["pattern"].startswith("^[0-9]")


# --- defect 8: uvicorn's loggers go through the JSON formatter ---------------------------


def test_uvicorns_traceback_is_a_scrubbed_json_line(
    restored_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvicorn configures its loggers before it imports the app, which then configures ours.
    logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    configure_logging("scheduler")
    try:
        raise ValueError("borrower phone 13812345678")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("uvicorn.access").info('%s - "%s %s"', "127.0.0.1", "GET", "/v1/tasks")
    lines = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert [line["logger"] for line in lines] == ["uvicorn.error", "uvicorn.access"]
    assert "ValueError" in lines[0]["exc"]
    assert "13812345678" not in stderr.getvalue()


# --- defect 14: which errors mean "the database is unavailable" ---------------------------


def test_connection_failures_are_unavailability_not_bugs() -> None:
    assert is_unavailable(ConnectionRefusedError(111, "refused"))
    assert is_unavailable(TimeoutError())
    assert not is_unavailable(RuntimeError("bug"))
    assert not is_unavailable(ValueError("bad"))


# --- defect 5: the OpenAPI documents say what the APIs answer -----------------------------


@pytest.mark.parametrize(
    "document",
    [
        lambda: scheduler_app(SchedulerSettings(env="test")).openapi(),
        lambda: visits_app(VisitsSettings(env="test")).openapi(),
        lambda: alerts_app(AlertsSettings(env="test")).openapi(),
    ],
    ids=["scheduler", "visits", "alerts"],
)
def test_every_operation_documents_its_problem_answers(document: Any) -> None:
    doc = document()
    assert "Problem" in doc["components"]["schemas"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            for status in ("401", "422", "500", "503"):
                content = responses[status]["content"]
                assert list(content) == ["application/problem+json"], (method, path, status)
            assert operation["security"] == [{"bearer": []}]
            if "Roles: agent, supervisor, ops, integration, admin." not in operation.get(
                "description", ""
            ):
                assert "403" in responses, (method, path)


def test_specific_answers_are_documented() -> None:
    paths = scheduler_app(SchedulerSettings(env="test")).openapi()["paths"]
    assert {"200", "201", "409"} <= set(paths["/v1/loans/{loan_id}"]["put"]["responses"])
    assert "404" in paths["/v1/loans/{loan_id}"]["get"]["responses"]
    assert {"404", "409"} <= set(paths["/v1/tasks/{task_id}/reschedule"]["post"]["responses"])
    imported = paths["/v1/loans/import"]["post"]
    assert "413" in imported["responses"]
    assert "application/x-ndjson" in imported["requestBody"]["content"]
    cursor = next(p for p in paths["/v1/tasks"]["get"]["parameters"] if p["name"] == "cursor")
    assert cursor["schema"]["anyOf"][0]["pattern"] == "^[A-Za-z0-9_-]{0,256}$"
