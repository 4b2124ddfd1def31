"""What an outside attacker found in the running system, on the real database: another
region's task handed to one's own agent, 500s from the scheduler's 4xx answers and from lone
surrogates, bodies read before the token was checked and without a size limit, PII echoed
through the request id, import bytes silently replaced, control bytes in idempotency keys,
an unparseable body without a title, and `0` taken for false."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from services.scheduler import main as scheduler_main
from services.scheduler.settings import SchedulerSettings
from services.visits import main as visits_main
from services.visits.settings import VisitsSettings
from tests.conftest import Infra
from tests.integration.conftest import System
from tests.integration.test_api_failures import json_logs, serving
from tests.integration.test_hostile_input import assert_problem, open_alert, visit
from tests.support import (
    ADMIN,
    CORE_BANKING,
    auth,
    dispatched,
    fetchval,
    loan_body,
    new_id,
    register_agent,
    register_loan,
    supervisor,
)

OPS = auth("ops", "ops-desk-1")


def visit_headers(agent_id: str, key: str | None = None) -> dict[str, str]:
    return auth("agent", agent_id) | {"Idempotency-Key": key or new_id("K")}


async def first_task(system: System, loan_id: str) -> dict[str, Any]:
    """The loan's first task, once the dispatcher has given it to an agent."""
    [task] = await dispatched(system.scheduler, loan_id)
    return dict(task)


# --- finding 1: a supervisor acts only in its own region ----------------------------------


async def test_a_supervisor_cannot_hand_another_regions_task_to_its_agent(
    system: System,
) -> None:
    bj, sh = new_id("BJ"), new_id("SH")
    bj_agent = await register_agent(system.scheduler, bj)
    sh_agent = await register_agent(system.scheduler, sh)
    loan_id = await register_loan(system.scheduler, bj)
    task = await first_task(system, loan_id)
    assert task["agent_id"] == bj_agent
    url = f"/v1/tasks/{task['task_id']}/reschedule"

    hijack = await system.scheduler.post(
        url, json={"due_on": "2027-01-05", "agent_id": sh_agent}, headers=supervisor(sh)
    )
    assert_problem(hijack, 404)  # looks absent: nothing to probe
    sql = "SELECT agent_id FROM scheduler.visit_tasks WHERE task_id = $1"
    assert await fetchval(system.database_url, sql, uuid.UUID(task["task_id"])) == bj_agent
    # ... so the SH agent still may not record a visit on the BJ loan.
    refused = await system.visits.post(
        "/v1/visits", json=visit(loan_id, None), headers=visit_headers(sh_agent)
    )
    assert_problem(refused, 404)

    no_region = auth("supervisor", "sup-1")
    assert_problem(
        await system.scheduler.post(url, json={"due_on": "2027-01-05"}, headers=no_region), 403
    )

    # The new agent must work in the loan's region, whoever asks.
    for who in (supervisor(bj), ADMIN):
        wrong = await system.scheduler.post(
            url, json={"due_on": "2027-01-05", "agent_id": sh_agent}, headers=who
        )
        assert_problem(wrong, 422, "body.agent_id")
    assert await fetchval(system.database_url, sql, uuid.UUID(task["task_id"])) == bj_agent

    colleague = await register_agent(system.scheduler, bj)
    moved = await system.scheduler.post(
        url, json={"due_on": "2027-01-05", "agent_id": colleague}, headers=supervisor(bj)
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["agent_id"] == colleague


# --- finding 2: the scheduler's 4xx answers are not a 500 in visits -----------------------


async def test_a_visit_on_the_reserved_loan_id_is_a_422_not_a_500(system: System) -> None:
    response = await system.visits.post(
        "/v1/visits",
        json=visit("import", None),
        headers=supervisor("SH") | {"Idempotency-Key": new_id("K")},
    )
    assert_problem(response, 422, "body.loan_id")


@pytest.mark.parametrize("sub", ["ag.1@x", "AG:1", "ag@lender"])
async def test_an_agent_token_whose_sub_is_not_an_agent_id_is_a_401(
    system: System, sub: str
) -> None:
    response = await system.visits.post(
        "/v1/visits", json=visit("L-1", None), headers=visit_headers(sub)
    )
    assert_problem(response, 401)


@asynccontextmanager
async def client_of(app: FastAPI, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client,
    ):
        yield client


async def test_a_scheduler_refusing_our_service_token_is_a_503_logged_as_an_error(
    infra: Infra,
) -> None:
    """Visits configured with another JWT secret than the scheduler: the scheduler answers
    401 to its service token. That is our misconfiguration, not the caller's fault."""
    scheduler = scheduler_main.build_app(
        SchedulerSettings(env="test", database_url=infra.database_url)
    )
    other_secret = "another-secret-than-the-schedulers-32b"
    visits = visits_main.build_app(
        VisitsSettings(
            env="test", database_url=infra.database_url, jwt_secret=other_secret, http_retries=0
        ),
        scheduler_transport=httpx.ASGITransport(app=scheduler),
    )
    async with (
        client_of(scheduler, "http://scheduler"),
        client_of(visits, "http://visits") as client,
    ):
        with json_logs() as lines:
            response = await client.post(
                "/v1/visits",
                json=visit("L-1", None),
                headers=auth("agent", "AG-1", secret=other_secret) | {"Idempotency-Key": "k-1"},
            )
    assert_problem(response, 503)
    assert response.headers["Retry-After"]
    assert any(line["level"] == "ERROR" and "token" in line["message"] for line in lines), lines


# --- finding 3: lone surrogates are a 422 naming the field --------------------------------


async def test_a_lone_surrogate_in_free_text_is_a_422_naming_the_field(
    system: System, producer: AIOKafkaProducer
) -> None:
    region = new_id("R")
    agent_id = await register_agent(system.scheduler, region)
    loan_id = await register_loan(system.scheduler, region)
    task = await first_task(system, loan_id)

    # A plain ASCII body: the JSON escape is what makes the lone surrogate.
    body = json.dumps(visit(loan_id, task["task_id"], notes="\ud800"))
    assert body.isascii() and "\\ud800" in body
    captured = await system.visits.post(
        "/v1/visits",
        content=body,
        headers=visit_headers(agent_id) | {"content-type": "application/json"},
    )
    assert_problem(captured, 422, "body.notes")

    rescheduled = await system.scheduler.post(
        f"/v1/tasks/{task['task_id']}/reschedule",
        content=json.dumps({"due_on": "2027-01-05", "note": "\udfff"}),
        headers=supervisor(region) | {"content-type": "application/json"},
    )
    assert_problem(rescheduled, 422, "body.note")

    alert = await open_alert(system, producer)
    resolved = await system.alerts.post(
        f"/v1/alerts/{alert['alert_id']}/resolve",
        content=json.dumps({"action": "legal_review", "note": "\udfff"}),
        headers=OPS | {"content-type": "application/json"},
    )
    assert_problem(resolved, 422, "body.note")

    named = await system.scheduler.put(
        f"/v1/agents/{new_id('AG')}",
        content=json.dumps(
            {"name": "李\ud800", "region": "SH", "methods": ["phone"], "daily_capacity": 5}
        ),
        headers=ADMIN | {"content-type": "application/json"},
    )
    assert_problem(named, 422, "body.name")

    # A key made of one: pydantic refuses the body as a whole, and the answer still encodes.
    odd_key = await system.scheduler.put(
        f"/v1/agents/{new_id('AG')}",
        content=json.dumps({"\ud800": 1, "name": "李娜", "region": "SH", "methods": ["phone"]}),
        headers=ADMIN | {"content-type": "application/json"},
    )
    assert_problem(odd_key, 422, "body")


# --- finding 4: the token before the body; bodies bounded as they stream ------------------


def test_an_unauthenticated_huge_post_is_a_401_before_the_body_is_sent(infra: Infra) -> None:
    """Headers announcing 200 MB and no body at all: the answer cannot wait for it."""
    app = visits_main.build_app(VisitsSettings(env="test", database_url=infra.database_url))
    with serving(app) as port:
        for authorization in ("", "Authorization: Bearer forged.token.here\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                started = time.monotonic()
                sock.sendall(
                    (
                        "POST /v1/visits HTTP/1.1\r\nHost: visits\r\n"
                        "Content-Type: application/json\r\n"
                        f"{authorization}Content-Length: {200 * 1024 * 1024}\r\n\r\n"
                    ).encode()
                )
                answer = sock.recv(65536).decode()
                elapsed = time.monotonic() - started
            assert answer.startswith("HTTP/1.1 401"), answer
            assert "application/problem+json" in answer
            assert elapsed < 2, elapsed


async def test_the_token_is_checked_before_the_body_is_read(infra: Infra) -> None:
    """At the ASGI level: a missing or invalid token is answered without a single `receive`."""
    app = visits_main.build_app(VisitsSettings(env="test", database_url=infra.database_url))
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"{}", "more_body": False}

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    for headers in ([], [(b"authorization", b"Bearer nope")]):
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/visits",
            "raw_path": b"/v1/visits",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), *headers],
            "server": ("visits", 80),
            "client": ("127.0.0.1", 1),
        }
        await app(scope, receive, send)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [401, 401]
    assert reads == 0


MIB = 1024 * 1024


def padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON grown to `size` bytes with spaces (valid JSON, just large)."""
    raw = json.dumps(body).encode()
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


async def test_a_body_over_a_mebibyte_is_a_413_announced_or_chunked(system: System) -> None:
    url = f"/v1/loans/{new_id('L')}"
    big = padded(loan_body(region="SH"), 2 * MIB)
    headers = CORE_BANKING | {"content-type": "application/json"}
    announced = await system.scheduler.put(url, content=big, headers=headers)
    assert_problem(announced, 413)
    assert announced.json()["title"] == "Content Too Large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    streamed = await system.scheduler.put(url, content=chunks(), headers=headers)
    assert "content-length" not in streamed.request.headers
    assert_problem(streamed, 413)
    assert (await system.scheduler.get(url, headers=ADMIN)).status_code == 404

    # Just under the limit is read and validated as usual.
    fits = await system.scheduler.put(
        url, content=padded(loan_body(region="SH"), MIB - 10), headers=headers
    )
    assert fits.status_code == 201, fits.text


async def test_the_loan_import_takes_more_than_a_json_body_up_to_its_own_limit(
    system: System, infra: Infra
) -> None:
    line = json.dumps({"loan_id": new_id("L"), **loan_body(region="SH")}).encode() + b"\n"
    padding = b" " * (2 * MIB) + b"\n"  # blank lines count as bytes, not as loans
    imported = await system.scheduler.post(
        "/v1/loans/import", content=line + padding, headers=CORE_BANKING
    )
    assert imported.status_code == 200, imported.text

    app = scheduler_main.build_app(
        SchedulerSettings(env="test", database_url=infra.database_url, max_import_bytes=MIB)
    )
    async with client_of(app, "http://scheduler") as client:
        too_big = await client.post(
            "/v1/loans/import", content=line + padding, headers=CORE_BANKING
        )
    assert_problem(too_big, 413)


async def test_a_422_lists_at_most_fifty_errors_and_counts_the_rest(system: System) -> None:
    unknown = {f"k{i}": 0 for i in range(60_000)}
    response = await system.scheduler.put(f"/v1/agents/{new_id('AG')}", json=unknown, headers=ADMIN)
    assert_problem(response, 422)
    problem = response.json()
    assert len(problem["errors"]) == 50
    assert "more errors not listed" in problem["detail"]
    assert len(response.content) < 20_000


# --- finding 7: no PII through the request id ---------------------------------------------


async def test_a_request_id_carrying_a_national_id_is_replaced(system: System) -> None:
    with json_logs() as lines:
        response = await system.scheduler.get(
            "/v1/loans/nope", headers=ADMIN | {"X-Request-ID": "110101199003074512"}
        )
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] != "110101199003074512"
    assert "110101199003074512" not in json.dumps(lines)
    kept = await system.scheduler.get("/v1/loans/nope", headers=ADMIN | {"X-Request-ID": "t-42"})
    assert kept.headers["X-Request-ID"] == "t-42"


# --- finding 8: the import refuses what is not UTF-8, and an empty import -----------------


async def test_an_import_line_that_is_not_utf8_is_rejected_naming_its_line(system: System) -> None:
    good = {"loan_id": new_id("L"), **loan_body(region="SH")}
    bad = {"loan_id": new_id("L"), **loan_body(region="SH")}
    bad["vehicle"]["plate"] = "A@1"
    body = (json.dumps(good) + "\n\n" + json.dumps(bad) + "\n").encode().replace(b"A@1", b"A\xff1")
    response = await system.scheduler.post("/v1/loans/import", content=body, headers=CORE_BANKING)
    assert response.status_code == 200, response.text
    [rejected] = response.json()["rejected_lines"]
    assert rejected["line"] == 3  # the blank line counts
    assert rejected["reason"].startswith("not UTF-8")
    for loan, status in ((good, 200), (bad, 404)):
        assert (
            await system.scheduler.get(f"/v1/loans/{loan['loan_id']}", headers=ADMIN)
        ).status_code == status


@pytest.mark.parametrize("body", [b"", b"\n \n"])
async def test_an_empty_import_is_a_422(system: System, body: bytes) -> None:
    response = await system.scheduler.post("/v1/loans/import", content=body, headers=CORE_BANKING)
    assert_problem(response, 422, "body")
    assert response.json()["detail"] == "no loans in the import"


# --- finding 9: idempotency keys are visible ASCII ----------------------------------------


@pytest.mark.parametrize("key", [b"k\x01", b"k\x7f", b"a\tb", b"\xff\x80", b"x" * 256])
async def test_an_idempotency_key_of_invisible_or_non_ascii_bytes_is_a_422(
    system: System, key: bytes
) -> None:
    region = new_id("R")
    agent_id = await register_agent(system.scheduler, region)
    loan_id = await register_loan(system.scheduler, region)
    task = await first_task(system, loan_id)
    response = await system.visits.post(
        "/v1/visits",
        json=visit(loan_id, task["task_id"]),
        headers=[(name.encode(), value.encode()) for name, value in auth("agent", agent_id).items()]
        + [(b"Idempotency-Key", key)],
    )
    assert_problem(response, 422, "header.Idempotency-Key")
    sql = "SELECT count(*) FROM visits.visits WHERE agent_id = $1"
    assert await fetchval(system.database_url, sql, agent_id) == 0


# --- finding 10: a body that cannot be parsed is a 400 naming it --------------------------


async def test_json_nested_too_deep_is_a_bad_request_naming_the_body(system: System) -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    response = await system.scheduler.put(
        f"/v1/agents/{new_id('AG')}",
        content=deep,
        headers=ADMIN | {"content-type": "application/json"},
    )
    assert_problem(response, 400, "body")
    assert response.json()["title"] == "Bad Request"


# --- finding 11: booleans are JSON booleans -----------------------------------------------


async def test_a_number_is_not_a_boolean(system: System) -> None:
    agent = await system.scheduler.put(
        f"/v1/agents/{new_id('AG')}",
        json={
            "name": "李娜",
            "region": "SH",
            "methods": ["phone"],
            "daily_capacity": 5,
            "active": 0,
        },
        headers=ADMIN,
    )
    assert_problem(agent, 422, "body.active")

    region = new_id("R")
    agent_id = await register_agent(system.scheduler, region)
    loan_id = await register_loan(system.scheduler, region)
    task = await first_task(system, loan_id)
    body = visit(loan_id, task["task_id"])
    body["findings"]["identity_verified"] = 0
    captured = await system.visits.post("/v1/visits", json=body, headers=visit_headers(agent_id))
    assert_problem(captured, 422, "body.findings.identity_verified")
