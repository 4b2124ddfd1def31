"""Hostile input against the three APIs on the real database: NUL bytes, absurd dates,
forged cursors and tokens are 4xx problem+json naming the field, never a 500; notes are
masked at rest; every response carries the request id and the no-sniff/no-store headers."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.integration.conftest import System
from tests.support import (
    ADMIN,
    CORE_BANKING,
    PHONE_FINDINGS,
    auth,
    dispatched,
    eventually,
    fetchval,
    loan_body,
    new_id,
    produce,
    register_agent,
    register_loan,
    repayment_event,
    supervisor,
)

OPS = auth("ops", "ops-desk-1")
NUL = "dri\x00ver"
PHONE_AND_ID = "借款人新号码 +86 138-1234-5678，身份证 110101199003074512"


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> None:
    """A problem+json answer of `status`; for a 422, naming `field` among the fields at fault."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    if field is not None:
        assert field in {e["field"] for e in problem["errors"]}, problem


def nested(path: str, value: Any) -> dict[str, Any]:
    """A valid loan body with `value` at the dotted `path`."""
    body = loan_body(region="SH")
    *parents, leaf = path.split(".")
    target = body
    for key in parents:
        target = target[key]
    target[leaf] = value
    return body


async def supervisor_of_loan(system: System, loan_id: str) -> dict[str, str]:
    """A supervisor of the loan's region: the one who may reschedule its tasks."""
    loan = await system.scheduler.get(f"/v1/loans/{loan_id}", headers=ADMIN)
    return supervisor(loan.json()["region"])


async def open_task(system: System) -> tuple[str, dict[str, Any]]:
    """A new agent and loan in a new region, and the loan's first task (the agent's)."""
    region = new_id("R")
    agent_id = await register_agent(system.scheduler, region)
    loan_id = await register_loan(system.scheduler, region)
    [task] = await dispatched(system.scheduler, loan_id)
    return agent_id, task


async def open_alert(system: System, producer: AIOKafkaProducer) -> dict[str, Any]:
    """A fresh open dpd_90 alert on a new loan."""
    loan_id = await register_loan(system.scheduler, new_id("R"))
    await produce(producer, repayment_event(loan_id, days_past_due=95))

    async def raised() -> dict[str, Any] | None:
        page = await system.alerts.get("/v1/alerts", params={"loan_id": loan_id}, headers=OPS)
        items: list[dict[str, Any]] = page.json()["items"]
        return items[0] if items else None

    return await eventually(raised)


def visit(loan_id: str, task_id: str | None, **overrides: Any) -> dict[str, Any]:
    started = datetime.now(UTC) - timedelta(minutes=20)
    body: dict[str, Any] = {
        "task_id": task_id,
        "loan_id": loan_id,
        "method": "phone",
        "outcome": "completed",
        "started_at": started.isoformat(),
        "ended_at": (started + timedelta(minutes=10)).isoformat(),
        "findings": dict(PHONE_FINDINGS),
    }
    return body | overrides


# --- defect 4: NUL bytes and absurd values ------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("borrower.occupation", NUL, "body.borrower.occupation"),
        ("borrower.borrower_id", "B\x00-1", "body.borrower.borrower_id"),
        ("vehicle.plate", "沪A\x0012345", "body.vehicle.plate"),
        ("region", "S\x00H", "body.region"),
        ("disbursed_on", "9999-12-31", "body.disbursed_on"),
        ("vehicle.valued_on", "0001-01-01", "body.vehicle.valued_on"),
        ("principal", "", "body.principal"),
        ("borrower.monthly_income", 12000.5, "body.borrower.monthly_income"),
        ("borrower.phone", "１３８１２３４５６７８", "body.borrower.phone"),
        ("borrower.national_id", "١١٠١٠١١٩٩٠٠٣٠٧٤٥١٢", "body.borrower.national_id"),
    ],
)
async def test_a_hostile_loan_field_is_a_422_naming_it(
    system: System, path: str, value: Any, field: str
) -> None:
    loan_id = new_id("L")
    response = await system.scheduler.put(
        f"/v1/loans/{loan_id}", json=nested(path, value), headers=CORE_BANKING
    )
    assert_problem(response, 422, field)
    missing = await system.scheduler.get(f"/v1/loans/{loan_id}", headers=ADMIN)
    assert missing.status_code == 404  # nothing written


async def test_a_nul_in_an_agent_name_is_a_422(system: System) -> None:
    response = await system.scheduler.put(
        f"/v1/agents/{new_id('AG')}",
        json={"name": "李\x00娜", "region": "SH", "methods": ["phone"], "daily_capacity": 5},
        headers=ADMIN,
    )
    assert_problem(response, 422, "body.name")


async def test_a_nul_in_a_reschedule_note_is_a_422(system: System) -> None:
    _, task = await open_task(system)
    response = await system.scheduler.post(
        f"/v1/tasks/{task['task_id']}/reschedule",
        json={"due_on": "2027-01-05", "note": NUL},
        headers=await supervisor_of_loan(system, task["loan_id"]),
    )
    assert_problem(response, 422, "body.note")


async def test_a_nul_in_a_resolution_note_is_a_422(
    system: System, producer: AIOKafkaProducer
) -> None:
    alert = await open_alert(system, producer)
    response = await system.alerts.post(
        f"/v1/alerts/{alert['alert_id']}/resolve",
        json={"action": "legal_review", "note": NUL},
        headers=OPS,
    )
    assert_problem(response, 422, "body.note")
    still = await system.alerts.get(f"/v1/alerts/{alert['alert_id']}", headers=OPS)
    assert still.json()["status"] == "open"


async def test_a_nul_in_an_import_line_rejects_that_line_only(system: System) -> None:
    good = {"loan_id": new_id("L"), **loan_body(region="SH")}
    bad = {"loan_id": new_id("L"), **nested("borrower.occupation", NUL)}
    response = await system.scheduler.post(
        "/v1/loans/import",
        content=f"{json.dumps(good)}\n{json.dumps(bad)}\n",
        headers=CORE_BANKING,
    )
    assert response.status_code == 200, response.text
    [rejected] = response.json()["rejected_lines"]
    assert (rejected["line"], rejected["field"]) == (2, "borrower.occupation")
    assert (
        await system.scheduler.get(f"/v1/loans/{bad['loan_id']}", headers=ADMIN)
    ).status_code == 404
    assert (
        await system.scheduler.get(f"/v1/loans/{good['loan_id']}", headers=ADMIN)
    ).status_code == 200


@pytest.mark.parametrize(
    ("service", "url", "field"),
    [
        ("scheduler", "/v1/loans/L%00x", "path.loan_id"),
        ("scheduler", "/v1/loans/L%00x/tasks", "path.loan_id"),
        ("scheduler", "/v1/tasks?loan_id=L%00x", "query.loan_id"),
        ("scheduler", "/v1/tasks?agent_id=AG%00x", "query.agent_id"),
        ("scheduler", "/v1/tasks?due_from=9999-12-31", "query.due_from"),
        ("visits", "/v1/visits?loan_id=L%00x", "query.loan_id"),
        ("visits", "/v1/visits?agent_id=AG%00x", "query.agent_id"),
        ("alerts", "/v1/alerts?loan_id=L%00x", "query.loan_id"),
        ("alerts", "/v1/alerts?rule=dpd%0090", "query.rule"),
    ],
)
async def test_a_nul_in_a_path_or_query_parameter_is_a_422(
    system: System, service: str, url: str, field: str
) -> None:
    client: httpx.AsyncClient = getattr(system, service)
    response = await client.get(url, headers=ADMIN)
    assert_problem(response, 422, field)


def _nested_cursor(depth: int) -> str:
    return base64.urlsafe_b64encode(("[" * depth + "]" * depth).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        _nested_cursor(5_000),  # RecursionError in json.loads before
        base64.urlsafe_b64encode(b'["0001-01-01T00:00:00+14:00", "%s"]' % uuid.uuid4().hex.encode())
        .decode()
        .rstrip("="),
    ],
)
async def test_a_forged_cursor_is_a_422(system: System, cursor: str) -> None:
    for client, url in (
        (system.scheduler, "/v1/tasks"),
        (system.visits, "/v1/visits"),
        (system.alerts, "/v1/alerts"),
    ):
        response = await client.get(url, params={"cursor": cursor}, headers=ADMIN)
        assert_problem(response, 422, "query.cursor")


async def test_an_empty_cursor_is_the_first_page(system: System) -> None:
    for client, url in (
        (system.scheduler, "/v1/tasks?cursor="),
        (system.visits, "/v1/visits?cursor="),
        (system.alerts, "/v1/alerts?cursor="),
    ):
        response = await client.get(url, headers=ADMIN)
        assert response.status_code == 200, response.text


async def test_an_agent_token_with_an_overlong_sub_is_a_401(system: System) -> None:
    response = await system.visits.post(
        "/v1/visits",
        json=visit("L-1", None),
        headers=auth("agent", "AG-" + "x" * 62) | {"Idempotency-Key": new_id("K")},
    )
    assert_problem(response, 401)


@pytest.mark.parametrize(
    ("started_at", "ended_at", "field"),
    [
        ("0001-01-01T00:00:00+00:00", "0001-01-01T00:10:00+00:00", "body.started_at"),
        ("1999-12-31T23:00:00+00:00", "2026-01-01T00:10:00+00:00", "body.started_at"),
        ("2026-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00", "body.ended_at"),
        (None, "in an hour", "body.ended_at"),
    ],
)
async def test_a_visit_outside_2000_to_now_is_a_422_and_writes_nothing(
    system: System, started_at: str | None, ended_at: str, field: str
) -> None:
    agent_id, task = await open_task(system)
    body = visit(task["loan_id"], task["task_id"])
    if started_at is not None:
        body["started_at"] = started_at
    body["ended_at"] = (
        (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        if ended_at == "in an hour"
        else ended_at
    )
    response = await system.visits.post(
        "/v1/visits", json=body, headers=auth("agent", agent_id) | {"Idempotency-Key": new_id("K")}
    )
    assert_problem(response, 422, field)
    sql = "SELECT count(*) FROM visits.visits WHERE agent_id = $1"
    assert await fetchval(system.database_url, sql, agent_id) == 0


# --- defect 7: PII typed into notes is masked at rest and in responses --------------------

SECRETS = ("13812345678", "138-1234-5678", "110101199003074512")


def assert_masked(text: str | None) -> None:
    assert text is not None
    assert "5678" in text and "4512" in text  # the tails stay, to tell numbers apart
    for secret in SECRETS:
        assert secret not in text, text


async def test_numbers_in_a_visit_note_are_masked_at_rest_and_in_responses(
    system: System,
) -> None:
    agent_id, task = await open_task(system)
    response = await system.visits.post(
        "/v1/visits",
        json=visit(task["loan_id"], task["task_id"], notes=PHONE_AND_ID),
        headers=auth("agent", agent_id) | {"Idempotency-Key": new_id("K")},
    )
    assert response.status_code == 201, response.text
    assert_masked(response.json()["notes"])
    assert response.json()["notes"].startswith("借款人新号码 ")
    sql = "SELECT notes FROM visits.visits WHERE visit_id = $1"
    assert_masked(await fetchval(system.database_url, sql, uuid.UUID(response.json()["visit_id"])))


async def test_numbers_in_a_reschedule_note_are_masked_at_rest_and_in_responses(
    system: System,
) -> None:
    _, task = await open_task(system)
    response = await system.scheduler.post(
        f"/v1/tasks/{task['task_id']}/reschedule",
        json={"due_on": "2027-01-05", "note": PHONE_AND_ID},
        headers=await supervisor_of_loan(system, task["loan_id"]),
    )
    assert response.status_code == 200, response.text
    assert_masked(response.json()["reason"]["note"])
    sql = "SELECT reason->>'note' FROM scheduler.visit_tasks WHERE task_id = $1"
    assert_masked(await fetchval(system.database_url, sql, uuid.UUID(task["task_id"])))


async def test_numbers_in_a_resolution_note_are_masked_at_rest_and_in_responses(
    system: System, producer: AIOKafkaProducer
) -> None:
    alert = await open_alert(system, producer)
    # Resolved once taken: open -> acknowledged -> resolved.
    await system.alerts.post(f"/v1/alerts/{alert['alert_id']}/ack", headers=OPS)
    response = await system.alerts.post(
        f"/v1/alerts/{alert['alert_id']}/resolve",
        json={"action": "repayment_plan", "note": PHONE_AND_ID.replace("-", " ")},
        headers=OPS,
    )
    assert response.status_code == 200, response.text
    assert_masked(response.json()["resolution_note"])
    sql = "SELECT resolution_note FROM alerts.alerts WHERE alert_id = $1"
    assert_masked(await fetchval(system.database_url, sql, uuid.UUID(alert["alert_id"])))


# --- defect 8: headers, the reserved loan id, one statement either way -------------------


@pytest.mark.parametrize(
    ("service", "url", "status"),
    [
        ("scheduler", "/v1/tasks", 200),
        ("scheduler", "/v1/loans/nope", 404),
        ("visits", "/v1/visits", 200),
        ("alerts", "/v1/alerts", 200),
        ("alerts", "/v1/alerts/not-a-uuid", 422),
    ],
)
async def test_every_response_forbids_sniffing_and_caching_and_carries_the_request_id(
    system: System, service: str, url: str, status: int
) -> None:
    client: httpx.AsyncClient = getattr(system, service)
    response = await client.get(url, headers=ADMIN | {"X-Request-ID": "trace-42"})
    assert response.status_code == status
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Request-ID"] == "trace-42"
    forged = await client.get(url, headers=ADMIN | {"X-Request-ID": "x" * 500})
    assert forged.headers["X-Request-ID"] != "x" * 500  # a fresh one, not the caller's junk


async def test_import_is_not_a_loan_id(system: System) -> None:
    response = await system.scheduler.put(
        "/v1/loans/import", json=loan_body(region="SH"), headers=CORE_BANKING
    )
    assert_problem(response, 422, "path.loan_id")
    sql = "SELECT count(*) FROM scheduler.loans WHERE loan_id = 'import'"
    assert await fetchval(system.database_url, sql) == 0


_counting: ContextVar[list[str] | None] = ContextVar("counting", default=None)


def _record(*args: Any) -> None:
    seen = _counting.get()
    if seen is not None:
        seen.append(str(args[2]))


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements this task runs while the block runs (the in-process API runs in
    the caller's task; the workers, in their own, are not counted)."""
    seen: list[str] = []
    token = _counting.set(seen)
    event.listen(Engine, "before_cursor_execute", _record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", _record)
        _counting.reset(token)


async def test_a_loan_not_the_agents_costs_what_a_missing_one_costs(system: System) -> None:
    """Existing-but-not-yours and missing both answer 404 after one statement, so the time
    of the answer does not tell an agent which loans exist."""
    region = new_id("R")
    agent = await register_agent(system.scheduler, region)
    others = await register_loan(system.scheduler, new_id("R"))  # in a region without agents
    headers = auth("agent", agent)
    counts = []
    for loan_id in (others, new_id("L")):
        with statements() as seen:
            response = await system.scheduler.get(f"/v1/loans/{loan_id}", headers=headers)
        assert_problem(response, 404)
        counts.append(len([s for s in seen if s.lstrip().upper().startswith("SELECT")]))
    assert counts == [1, 1]
