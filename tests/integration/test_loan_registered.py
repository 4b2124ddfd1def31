"""`loan-registered`: the scheduler announces a new loan, and a loan whose facts changed,
through its outbox; the same registration again announces nothing; never PII."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from shared import devstack
from shared.events import LOAN_REGISTERED, LoanRegistered
from tests.conftest import Infra
from tests.integration.conftest import System
from tests.support import CORE_BANKING, fetchval, loan_body, new_id, read_topic

# What a loan body carries that identifies the borrower (tests.support.loan_body).
PII_VALUES = ("王建国", "110101199003074512", "13812345678")
PII_FIELDS = {"name", "national_id", "phone", "borrower", "borrower_id"}


def assert_no_pii(event: dict[str, Any]) -> None:
    assert not PII_FIELDS & set(event)
    text = json.dumps(event, ensure_ascii=False)
    assert not [value for value in PII_VALUES if value in text]


async def outbox_rows(system: System, loan_id: str) -> int:
    sql = "SELECT count(*) FROM scheduler.outbox WHERE topic = $1 AND message_key = $2"
    return int(await fetchval(system.database_url, sql, LOAN_REGISTERED, loan_id))


async def put_loan(system: System, loan_id: str, body: dict[str, Any]) -> int:
    response = await system.scheduler.put(f"/v1/loans/{loan_id}", json=body, headers=CORE_BANKING)
    assert response.status_code in (200, 201), response.text
    return response.status_code


async def test_new_and_changed_loans_are_announced_and_unchanged_ones_are_not(
    system: System,
) -> None:
    region = new_id("R")
    loan_id = new_id("L")
    body = loan_body(region=region, grade="D")
    assert await put_loan(system, loan_id, body) == 201

    first = await read_topic(system.bootstrap, LOAN_REGISTERED, lambda e: e["loan_id"] == loan_id)
    event = LoanRegistered.model_validate(first)  # the contract's model accepts it
    assert (event.region, event.credit_grade, event.agreed_usage) == (region, "D", "private")
    assert (first["principal"], first["valuation"], first["ltv"]) == (
        "80000.00",
        "98000.00",
        "0.8163",
    )
    assert (event.term_months, event.disbursed_on.isoformat()) == (36, "2026-10-15")
    assert_no_pii(first)

    # The same registration again (a retried call, a re-imported file): nothing announced.
    assert await put_loan(system, loan_id, body) == 200
    assert await outbox_rows(system, loan_id) == 1

    # A re-graded loan is announced with its new facts.
    assert await put_loan(system, loan_id, {**body, "credit_grade": "B"}) == 200
    assert await outbox_rows(system, loan_id) == 2
    changed = await read_topic(
        system.bootstrap,
        LOAN_REGISTERED,
        lambda e: e["loan_id"] == loan_id and e["event_id"] != first["event_id"],
    )
    assert changed["credit_grade"] == "B"
    assert changed["occurred_at"] >= first["occurred_at"]
    assert_no_pii(changed)


async def test_the_migration_announces_the_loans_registered_before_it(infra: Infra) -> None:
    """A loan present before revision 0003 gets one `loan-registered` row from the migration
    itself, so a projection built from the topic starts complete."""
    database = "huifang_loan_backfill"
    await asyncio.to_thread(devstack.create_database, infra.database_url, database)
    url = devstack.with_database(infra.database_url, database)
    await asyncio.to_thread(devstack.downgrade, url, "scheduler", "base")
    await asyncio.to_thread(devstack.migrate, url, "scheduler", "0002")
    await fetchval(
        url,
        "INSERT INTO scheduler.loans (loan_id, borrower_id, borrower_name_enc, national_id_enc,"
        " phone_enc, occupation, monthly_income, vin, plate, make_model, valuation, valued_on,"
        " credit_grade, principal, term_months, disbursed_on, region, agreed_usage,"
        " days_past_due, created_at, updated_at) VALUES ('L-OLD', 'B-OLD', 'x', 'x', 'x',"
        " 'driver', 12000, 'LSVAU2180N2183294', 'A1', 'BYD', 90000.00, '2026-01-02', 'C',"
        " 60000.00, 24, '2026-01-05', 'SH', 'commercial', 0, now(), now()) RETURNING 1",
    )
    await asyncio.to_thread(devstack.migrate, url, "scheduler", "head")

    payloads = await fetchval(
        url,
        "SELECT json_agg(payload) FROM scheduler.outbox WHERE topic = $1 AND message_key = $2",
        LOAN_REGISTERED,
        "L-OLD",
    )
    [payload] = json.loads(payloads)
    event = LoanRegistered.model_validate(payload)
    assert (event.region, event.credit_grade, event.agreed_usage) == ("SH", "C", "commercial")
    assert (payload["principal"], payload["valuation"], payload["ltv"]) == (
        "60000.00",
        "90000.00",
        "0.6667",
    )
    assert event.term_months == 24
    assert_no_pii(payload)
