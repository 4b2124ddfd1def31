"""End to end: core banking posts repayments to Kafka, a mobile agent records visits over
HTTP, the ops desk consumes alert-raised and works alerts over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from tests.e2e.conftest import Running
from tests.support import (
    CLEAN_FINDINGS,
    CORE_BANKING,
    auth,
    dispatched,
    eventually,
    loan_body,
    new_id,
    produce,
    read_topic,
    register_agent,
    register_loan,
    repayment_event,
    upload_photo,
)

OPS = auth("ops", "risk-desk-1")


@pytest.fixture
async def http(running: Running) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    clients = {
        name: httpx.AsyncClient(base_url=url, timeout=10) for name, url in running.urls.items()
    }
    yield clients
    for client in clients.values():
        await client.aclose()


@pytest.fixture
async def core_banking(running: Running) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=running.bootstrap, enable_idempotence=False)
    await producer.start()
    yield producer
    await producer.stop()


async def test_repayment_visit_and_alert_lifecycle(
    running: Running, http: dict[str, httpx.AsyncClient], core_banking: AIOKafkaProducer
) -> None:
    scheduler, visits, alerts = http["scheduler"], http["visits"], http["alerts"]
    for name in ("scheduler", "visits", "alerts"):
        # Ready once the service's workers have reported (shared/health.py).
        async def ready(client: httpx.AsyncClient = http[name]) -> bool:
            return bool((await client.get("/readyz")).json()["status"] == "ready")

        await eventually(ready)

    # Origination registers an agent and a high-risk loan disbursed today.
    region = new_id("SH")
    agent_id = await register_agent(scheduler, region)
    agent = auth("agent", agent_id)
    loan_id = new_id("AUTO")
    today = datetime.now(UTC).date()
    put_loan = await scheduler.put(
        f"/v1/loans/{loan_id}",
        json=loan_body(region=region, grade="E", disbursed_on=today),
        headers=CORE_BANKING,
    )
    assert put_loan.status_code == 201, put_loan.text
    assert put_loan.json()["borrower"]["national_id"].endswith("4512")
    assert "110101199003074512" not in put_loan.text

    # The mobile app shows the agent its first follow-up call, once the dispatcher gave
    # it to them (within a second or so of registration).
    await dispatched(scheduler, loan_id)
    [first] = (await scheduler.get("/v1/tasks", headers=agent)).json()["items"]
    assert (first["method"], first["agent_id"], first["reason"]["rule"]) == (
        "phone",
        agent_id,
        "first_follow_up",
    )

    # Core banking posts a missed installment 95 days past due.
    missed = repayment_event(loan_id, status="missed", days_past_due=95, installment_no=3)
    await produce(core_banking, missed)

    raised = await read_topic(
        running.bootstrap,
        "alert-raised",
        lambda r: r["loan_id"] == loan_id and r["rule"] == "dpd_90",
    )
    assert raised["severity"] == "critical"
    assert raised["recommended_action"] == "legal_review"
    assert raised["source_event_id"] == missed["event_id"]

    async def urgent_tasks() -> dict[str, dict[str, Any]] | None:
        items = (await scheduler.get("/v1/tasks?status=open", headers=agent)).json()["items"]
        by_method = {t["method"]: t for t in items if t["loan_id"] == loan_id}
        return by_method if {"phone", "field"} <= set(by_method) else None

    tasks = await eventually(urgent_tasks)
    assert date.fromisoformat(tasks["phone"]["due_on"]) <= today + timedelta(days=2)
    assert date.fromisoformat(tasks["field"]["due_on"]) <= today + timedelta(days=7)

    # The agent inspects the car: it is used for ride-hailing and has been pledged.
    field_task = tasks["field"]
    visit_body = {
        "task_id": field_task["task_id"],
        "loan_id": loan_id,
        "method": "field",
        "outcome": "completed",
        # A visit is recorded once it has happened: the API refuses times in the future.
        "started_at": (datetime.now(UTC) - timedelta(minutes=40)).isoformat(),
        "ended_at": datetime.now(UTC).isoformat(),
        "findings": {
            **CLEAN_FINDINGS,
            "employment_status": "changed",
            "income_change": "decreased",
            "vehicle_usage": "ride_hailing",
            "encumbrance_detected": True,
        },
        "geo": {"lat": 31.2304, "lon": 121.4737},
        "notes": "car parked at a ride-hailing depot",
        # Uploaded first, when the phone had signal: a completed inspection shows the car.
        "evidence": [await upload_photo(visits, agent)],
    }
    key = {"Idempotency-Key": str(uuid.uuid4())}
    recorded = await visits.post("/v1/visits", json=visit_body, headers=agent | key)
    assert recorded.status_code == 201, recorded.text
    visit_id = recorded.json()["visit_id"]
    # The app retries after a dropped connection: same key, same body, same visit.
    retried = await visits.post("/v1/visits", json=visit_body, headers=agent | key)
    assert retried.json()["visit_id"] == visit_id

    async def visit_alerts() -> dict[str, dict[str, Any]] | None:
        items = (await alerts.get(f"/v1/alerts?loan_id={loan_id}", headers=OPS)).json()["items"]
        by_rule = {a["rule"]: a for a in items}
        return by_rule if {"vehicle_misuse", "collateral_encumbered"} <= set(by_rule) else None

    by_rule = await eventually(visit_alerts)
    assert by_rule["vehicle_misuse"]["category"] == "vehicle"
    assert by_rule["collateral_encumbered"]["severity"] == "critical"
    assert by_rule["collateral_encumbered"]["category"] == "collateral"

    # The scheduler closed the field task with this visit and planned what comes next.
    async def field_task_done() -> dict[str, Any] | None:
        task = (await scheduler.get(f"/v1/tasks/{field_task['task_id']}", headers=agent)).json()
        return task if task["status"] == "completed" else None

    done = await eventually(field_task_done)
    assert done["visit_id"] == visit_id

    # Ops works the legal-review alert.
    dpd_alert = by_rule["dpd_90"]
    acked = await alerts.post(f"/v1/alerts/{dpd_alert['alert_id']}/ack", headers=OPS)
    assert acked.json()["status"] == "acknowledged"
    resolved = await alerts.post(
        f"/v1/alerts/{dpd_alert['alert_id']}/resolve",
        json={"action": "legal_review", "note": "file sent to legal"},
        headers=OPS,
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "resolved"

    # Core banking redelivers the same posting: no second alert.
    await produce(core_banking, missed)
    sentinel = repayment_event(loan_id, status="partial", days_past_due=20, installment_no=4)
    await produce(core_banking, sentinel)

    async def sentinel_seen() -> list[dict[str, Any]] | None:
        items = (await alerts.get(f"/v1/alerts?loan_id={loan_id}", headers=OPS)).json()["items"]
        return items if any(a["source_event_id"] == sentinel["event_id"] for a in items) else None

    items = await eventually(sentinel_seen)
    assert [a["rule"] for a in items].count("dpd_90") == 1


async def test_bad_events_go_to_dead_letter_topics_and_workers_keep_going(
    running: Running, http: dict[str, httpx.AsyncClient], core_banking: AIOKafkaProducer
) -> None:
    marker = new_id("BROKEN")
    await core_banking.send_and_wait("visit-completed", f"{{{marker}".encode(), key=b"x")
    invalid = repayment_event(new_id("L"), status="missed", days_past_due=40, installment_no=1)
    invalid["days_past_due"] = "forty"
    await produce(core_banking, invalid)

    dead_visit = await read_topic(
        running.bootstrap, "visit-completed.dlq", lambda r: marker in r["payload"]
    )
    assert dead_visit["reason"].startswith("unparseable")
    dead_posting = await read_topic(
        running.bootstrap,
        "repayment-posted.dlq",
        lambda r: invalid["event_id"] in r["payload"] and "days_past_due" in r["reason"],
    )
    assert dead_posting["source_topic"] == "repayment-posted"

    # A good posting after the bad ones is still applied.
    loan_id = await register_loan(http["scheduler"], new_id("E2E"))
    good = repayment_event(loan_id, status="missed", days_past_due=31, installment_no=2)
    await produce(core_banking, good)

    async def alert_for_good() -> list[Any] | None:
        response = await http["alerts"].get(f"/v1/alerts?loan_id={loan_id}", headers=OPS)
        return response.json()["items"] or None

    [alert] = await eventually(alert_for_good)
    assert alert["rule"] == "dpd_30"
