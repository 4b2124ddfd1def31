"""End to end, real processes: a loan registered at the scheduler is announced on
`loan-registered` without PII, the alerts worker keeps the loan's facts from it, and the
vehicle-misuse rule judges a visit against those facts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from tests.e2e.conftest import Running
from tests.support import (
    CORE_BANKING,
    eventually,
    fetchval,
    loan_body,
    new_id,
    produce,
    read_topic,
    visit_event,
)


@pytest.fixture
async def scheduler(running: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running.urls["scheduler"], timeout=10) as client:
        yield client


async def test_loan_facts_travel_to_alerts_without_pii(
    running: Running, scheduler: httpx.AsyncClient
) -> None:
    loan_id = new_id("LR")
    body = loan_body(region=new_id("GZ"), grade="D", agreed_usage="private")
    registered = await scheduler.put(f"/v1/loans/{loan_id}", json=body, headers=CORE_BANKING)
    assert registered.status_code == 201, registered.text

    announced = await read_topic(
        running.bootstrap, "loan-registered", lambda r: r.get("loan_id") == loan_id
    )
    assert announced["region"] == body["region"]
    assert (announced["credit_grade"], announced["agreed_usage"]) == ("D", "private")
    assert announced["principal"] == "80000.00"
    assert announced["ltv"] == "0.8163"  # 80,000 over a car valued at 98,000
    raw = json.dumps(announced, ensure_ascii=False)
    for pii in (body["borrower"]["name"], body["borrower"]["national_id"], "13812345678"):
        assert pii not in raw

    # Registering the same loan again announces nothing new: the next event on the topic
    # for this loan is the one its changed facts cause.
    again = await scheduler.put(f"/v1/loans/{loan_id}", json=body, headers=CORE_BANKING)
    assert again.status_code == 200, again.text
    changed = {**body, "agreed_usage": "commercial"}
    updated = await scheduler.put(f"/v1/loans/{loan_id}", json=changed, headers=CORE_BANKING)
    assert updated.status_code == 200, updated.text
    later = await read_topic(
        running.bootstrap,
        "loan-registered",
        lambda r: r.get("loan_id") == loan_id and r["event_id"] != announced["event_id"],
    )
    assert later["agreed_usage"] == "commercial"

    async def projected() -> bool:
        sql = "SELECT agreed_usage FROM alerts.loan_facts WHERE loan_id = $1"
        return bool(await fetchval(running.stack.database_url, sql, loan_id) == "commercial")

    await eventually(projected)

    # A field visit finds the car on a ride-hailing platform: misuse against the facts the
    # alerts worker holds (commercial use agreed), with no call to the scheduler.
    producer = AIOKafkaProducer(bootstrap_servers=running.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        visit = visit_event(loan_id, findings={"vehicle_usage": "ride_hailing"})
        await produce(producer, visit)
    finally:
        await producer.stop()

    # read_topic waits for the record itself (and fails if it never comes).
    alert = await read_topic(
        running.bootstrap,
        "alert-raised",
        lambda r: r.get("source_event_id") == visit["event_id"] and r["rule"] == "vehicle_misuse",
        within=60,
    )
    assert "commercial" in str(alert["reason"])
