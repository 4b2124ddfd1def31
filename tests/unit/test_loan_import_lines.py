"""The import's line reader and line parser: pure, no database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import date
from decimal import Decimal

from services.scheduler import policy
from services.scheduler.loan_import import numbered_lines, parse_line
from services.scheduler.registration import (
    _REGISTERED,
    _loan_columns,
    digest_key,
    first_follow_ups,
    loan_to_value,
    registration_digest,
)
from services.scheduler.schemas import LoanImportLine, LoanIn, RejectedLine
from services.scheduler.visit_policy import PolicyInForce, default_policy
from shared.pii import PiiCipher
from shared.settings import DEV_PII_KEY
from tests.support import loan_body

RULES = PolicyInForce(1, default_policy())


async def read(parts: Sequence[bytes], max_line_bytes: int = 10) -> list[tuple[int, bytes | None]]:
    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return [item async for item in numbered_lines(body(), max_line_bytes)]


async def test_lines_are_numbered_across_chunks_with_blank_lines_counted() -> None:
    assert await read([b"ab", b"c\n\nd", b"e\r\nf"]) == [
        (1, b"abc"),
        (2, b""),
        (3, b"de"),
        (4, b"f"),
    ]
    assert await read([b"a\n", b""]) == [(1, b"a")]
    assert await read([]) == []


async def test_an_overlong_line_is_reported_once_and_the_next_line_read_whole() -> None:
    # 12 bytes in three pieces, then a good line; and an overlong last line.
    assert await read([b"1234", b"5678", b"9012\nok\n", b"x" * 11]) == [
        (1, None),
        (2, b"ok"),
        (3, None),
    ]
    assert await read([b"1234567890\n"]) == [(1, b"1234567890")]  # exactly the cap
    assert await read([b"123456", b"78901\nz"]) == [(1, None), (2, b"z")]


def test_a_line_is_a_loan_or_the_reason_it_is_not() -> None:
    good = json.dumps({"loan_id": "L-1", **loan_body(region="SH")}).encode()
    assert isinstance(parse_line(good), LoanImportLine)

    bad = parse_line(good.replace(b'"term_months": 36', b'"term_months": 0'))
    assert isinstance(bad, RejectedLine)
    assert bad.field == "term_months"
    assert bad.reason.startswith("term_months: ")

    latin1 = parse_line(b'{"loan_id": "\xe4"}')
    assert isinstance(latin1, RejectedLine)
    assert latin1.reason == "not UTF-8 (byte 14)"

    not_json = parse_line(b"{")
    assert isinstance(not_json, RejectedLine) and not_json.field is None


def test_the_digest_is_keyed_and_the_same_for_a_put_and_an_import_line() -> None:
    body = loan_body(region="SH")
    line = LoanImportLine.model_validate({"loan_id": "L-1", **body})
    key = digest_key("some-pii-key")
    assert key != digest_key("another-pii-key")
    same = registration_digest(key, "L-1", LoanIn.model_validate(body))
    assert registration_digest(key, "L-1", line) == same
    assert registration_digest(key, "L-2", line) != same
    assert registration_digest(digest_key("another-pii-key"), "L-1", line) != same
    moved = LoanIn.model_validate(
        {**body, "borrower": {**body["borrower"], "phone": "13900000000"}}
    )
    assert registration_digest(key, "L-1", moved) != same


def test_loan_to_value_rounds_half_up_and_has_none_for_a_car_worth_nothing() -> None:
    assert loan_to_value(Decimal("1"), Decimal("16")) == Decimal("0.0625")
    assert loan_to_value(Decimal("1"), Decimal("32")) == Decimal("0.0313")  # 0.03125 up
    assert loan_to_value(Decimal("1"), Decimal("0")) is None
    assert loan_to_value(Decimal("9999999999999999"), Decimal("0.01")) is None


def test_each_disbursement_date_is_planned_once_as_the_policy_plans_it() -> None:
    days = [date(2026, 1, 31), date(2026, 1, 31), date(2026, 3, 1)]
    bodies = [LoanIn.model_validate(loan_body(region="SH", disbursed_on=day)) for day in days]
    plans = first_follow_ups(RULES, bodies)
    assert sorted(plans) == [date(2026, 1, 31), date(2026, 3, 1)]
    for day, plan in plans.items():
        planned = policy.first_follow_up(RULES, day)
        assert (plan.method, plan.due_on) == (planned.method, planned.due_on)
        assert json.loads(plan.reason) == planned.reason
    assert plans[date(2026, 1, 31)].due_on == date(2026, 2, 28)


def test_the_upsert_rows_are_one_list_per_registered_column_with_the_pii_sealed() -> None:
    cipher = PiiCipher(DEV_PII_KEY)
    bodies: list[LoanIn] = []
    for n in range(3):
        sent = loan_body(region=f"R{n}")
        borrower = {**sent["borrower"], "name": f"王{n}", "phone": f"1380000000{n}"}
        bodies.append(LoanIn.model_validate({**sent, "borrower": borrower}))
    fresh = [(f"L-{n}", loan, f"digest-{n}") for n, loan in enumerate(bodies)]
    columns = _loan_columns(cipher, fresh, first_follow_ups(RULES, bodies))
    assert list(columns) == [name for name, _ in _REGISTERED]
    assert all(len(values) == len(fresh) for values in columns.values())
    assert columns["region"] == ["R0", "R1", "R2"]
    for n, loan in enumerate(bodies):
        for column, plain in (
            ("borrower_name_enc", loan.borrower.name),
            ("national_id_enc", loan.borrower.national_id),
            ("phone_enc", loan.borrower.phone),
        ):
            sealed = columns[column][n]
            assert isinstance(sealed, str) and plain not in sealed
            assert cipher.decrypt(sealed) == plain
