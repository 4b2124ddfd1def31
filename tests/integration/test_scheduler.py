"""Scheduler against the real database and broker: loans, agents, tasks and the events
that replan them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from tests.integration.conftest import System
from tests.support import (
    ADMIN,
    CORE_BANKING,
    auth,
    dispatched,
    eventually,
    fetchrow,
    loan_body,
    new_id,
    produce,
    read_topic,
    register_agent,
    register_loan,
    repayment_event,
    supervisor,
)


async def tasks_of(system: System, loan_id: str) -> list[dict[str, Any]]:
    response = await system.scheduler.get(f"/v1/loans/{loan_id}/tasks", headers=ADMIN)
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_new_loan_gets_first_phone_follow_up_with_least_loaded_agent(system: System) -> None:
    region = new_id("R")
    busy = await register_agent(system.scheduler, region)
    # Gives `busy` one open task (the only agent then).
    await dispatched(system.scheduler, await register_loan(system.scheduler, region))
    idle = await register_agent(system.scheduler, region)
    await register_agent(system.scheduler, region, methods=["field"])  # cannot phone

    loan_id = await register_loan(system.scheduler, region, disbursed_on=date(2026, 10, 20))
    [task] = await dispatched(system.scheduler, loan_id)
    assert task["method"] == "phone"
    assert task["due_on"] == "2026-11-20"
    assert task["status"] == "open"
    assert task["agent_id"] == idle != busy
    assert task["reason"]["rule"] == "first_follow_up"
    assert task["reason"]["inputs"]["disbursed_on"] == "2026-10-20"
    assert task["reason"]["policy_version"] >= 1


async def test_loan_put_is_idempotent_and_pii_is_masked_and_encrypted(system: System) -> None:
    region = new_id("R")
    loan_id = await register_loan(system.scheduler, region)
    body = loan_body(region=region, grade="B")
    again = await system.scheduler.put(f"/v1/loans/{loan_id}", json=body, headers=CORE_BANKING)
    assert again.status_code == 200
    assert again.json()["credit_grade"] == "B"
    assert len(await tasks_of(system, loan_id)) == 1  # no second first-follow-up

    shown = (await system.scheduler.get(f"/v1/loans/{loan_id}", headers=ADMIN)).json()
    assert shown["borrower"]["national_id"] == "**************4512"
    assert shown["borrower"]["phone"] == "*******5678"
    assert shown["borrower"]["name"] == "王**"

    sql = "SELECT * FROM scheduler.loans WHERE loan_id = $1"
    row = await fetchrow(system.database_url, sql, loan_id)
    assert row is not None
    stored = " ".join(str(v) for v in row.values())
    for secret in ("110101199003074512", "13812345678", "王建国"):
        assert secret not in stored


async def test_errors_are_problem_json_with_the_field_at_fault(system: System) -> None:
    body = loan_body(region="R")
    body["borrower"]["national_id"] = "12345"
    body["credit_grade"] = "Z"
    response = await system.scheduler.put("/v1/loans/L-bad", json=body, headers=CORE_BANKING)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"body.borrower.national_id", "body.credit_grade"} <= fields

    assert (await system.scheduler.put("/v1/loans/L-x", json=body)).status_code == 401
    forbidden = await system.scheduler.put("/v1/loans/L-x", json=body, headers=auth("agent", "a1"))
    assert forbidden.status_code == 403
    assert forbidden.json()["status"] == 403
    missing = await system.scheduler.get("/v1/loans/nope", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_agent_sees_only_its_own_tasks(system: System) -> None:
    region = new_id("R")
    mine = await register_agent(system.scheduler, region)
    loan_id = await register_loan(system.scheduler, region)
    [task] = await dispatched(system.scheduler, loan_id)
    other = auth("agent", new_id("AG"))

    own = await system.scheduler.get("/v1/tasks", headers=auth("agent", mine))
    assert [t["task_id"] for t in own.json()["items"]] == [task["task_id"]]
    # An agent asking for someone else's tasks still gets only its own (none).
    theirs = await system.scheduler.get(f"/v1/tasks?agent_id={mine}", headers=other)
    assert theirs.json()["items"] == []
    hidden = await system.scheduler.get(f"/v1/tasks/{task['task_id']}", headers=other)
    assert hidden.status_code == 404
    assert (await system.scheduler.get(f"/v1/loans/{loan_id}", headers=other)).status_code == 404
    assert (
        await system.scheduler.get(f"/v1/loans/{loan_id}", headers=auth("agent", mine))
    ).status_code == 200


async def test_missed_payment_plans_urgent_call_and_field_visit_at_30_dpd(
    system: System, producer: AIOKafkaProducer
) -> None:
    region = new_id("R")
    await register_agent(system.scheduler, region)
    today = datetime.now(UTC).date()
    loan_id = await register_loan(system.scheduler, region, disbursed_on=today)

    [first_call] = await tasks_of(system, loan_id)
    await produce(producer, repayment_event(loan_id, status="missed", days_past_due=35))

    async def planned() -> list[dict[str, Any]] | None:
        tasks = await tasks_of(system, loan_id)
        return tasks if any(t["method"] == "field" for t in tasks) else None

    tasks = await eventually(planned)
    by_method = {t["method"]: t for t in tasks}
    assert date.fromisoformat(by_method["phone"]["due_on"]) <= today + timedelta(days=2)
    assert by_method["phone"]["reason"]["rule"] == "missed_payment_call"
    assert date.fromisoformat(by_method["field"]["due_on"]) <= today + timedelta(days=7)
    assert by_method["field"]["reason"]["inputs"]["days_past_due"] == 35
    assert len(tasks) == 2  # the first follow-up call was brought forward, not duplicated
    assert by_method["phone"]["task_id"] == first_call["task_id"]
    loan = (await system.scheduler.get(f"/v1/loans/{loan_id}", headers=ADMIN)).json()
    assert loan["days_past_due"] == 35


async def test_redelivered_repayment_changes_nothing(
    system: System, producer: AIOKafkaProducer
) -> None:
    region = new_id("R")
    await register_agent(system.scheduler, region)
    loan_id = await register_loan(system.scheduler, region)
    event = repayment_event(loan_id, status="missed", days_past_due=40)
    await produce(producer, event)

    async def dispatched_field_task() -> dict[str, Any] | None:
        task = await _field_task(system, loan_id)
        return task if task and task["agent_id"] else None

    # Planned, then given its agent by the dispatcher: settled before the redelivery.
    first = await eventually(dispatched_field_task)

    await produce(producer, event)  # the same event_id again
    # A later posting on the same loan (same partition) proves the duplicate was consumed.
    sentinel = repayment_event(loan_id, status="paid", days_past_due=0)
    await produce(producer, sentinel)

    async def caught_up() -> bool:
        loan = (await system.scheduler.get(f"/v1/loans/{loan_id}", headers=ADMIN)).json()
        return bool(loan["last_repayment_status"] == "paid")

    await eventually(caught_up)
    field = await _field_task(system, loan_id)
    assert field == first
    assert len(await tasks_of(system, loan_id)) == 2


async def _field_task(system: System, loan_id: str) -> dict[str, Any] | None:
    return next((t for t in await tasks_of(system, loan_id) if t["method"] == "field"), None)


async def test_repayment_for_unknown_loan_goes_to_dead_letter_topic(
    system: System, producer: AIOKafkaProducer
) -> None:
    event = repayment_event(new_id("GHOST"), status="missed", days_past_due=10)
    await produce(producer, event)
    dead = await read_topic(
        system.bootstrap,
        "repayment-posted.dlq",
        lambda r: event["event_id"] in r.get("payload", "") and "not registered" in r["reason"],
    )
    assert dead["source_topic"] == "repayment-posted"


async def test_reschedule_and_bulk_import(system: System) -> None:
    region = new_id("R")
    await register_agent(system.scheduler, region)
    loan_id = await register_loan(system.scheduler, region)
    [task] = await tasks_of(system, loan_id)
    moved = await system.scheduler.post(
        f"/v1/tasks/{task['task_id']}/reschedule",
        json={"due_on": "2027-01-05", "note": "borrower travelling"},
        headers=supervisor(region),
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["due_on"] == "2027-01-05"
    assert moved.json()["reason"]["rescheduled_from"] == task["due_on"]

    # The import in full: tests/integration/test_loan_import.py.
    good = {"loan_id": new_id("L"), **loan_body(region=region)}
    accepted = await system.scheduler.post(
        "/v1/loans/import", content=json.dumps(good) + "\n", headers=CORE_BANKING
    )
    assert accepted.status_code == 200, accepted.text
    assert (accepted.json()["accepted"], accepted.json()["created"]) == (1, 1)
    assert len(await tasks_of(system, str(good["loan_id"]))) == 1


async def test_task_list_pages_with_a_cursor(system: System) -> None:
    region = new_id("R")
    agent = await register_agent(system.scheduler, region)
    for _ in range(3):
        await dispatched(system.scheduler, await register_loan(system.scheduler, region))
    seen: list[str] = []
    cursor: str | None = None
    while True:
        url = "/v1/tasks?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await system.scheduler.get(url, headers=auth("agent", agent))).json()
        seen += [t["task_id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 3
