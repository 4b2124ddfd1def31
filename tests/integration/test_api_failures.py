"""How the APIs fail: an unexpected error is a problem+json 500 answered inside the
middleware stack (request id, connection kept alive, logged once as JSON); a database that
is down or full is a 503 with Retry-After, not a 500."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import APIRouter, FastAPI
from sqlalchemy import text

from services.alerts import main as alerts_main
from services.alerts.settings import AlertsSettings
from services.scheduler import main as scheduler_main
from services.scheduler.settings import SchedulerSettings
from services.visits import main as visits_main
from services.visits.settings import VisitsSettings
from shared.app import SessionDep, create_app
from shared.devstack import free_port
from shared.logging import JsonFormatter
from shared.settings import ServiceSettings
from tests.conftest import Infra
from tests.support import ADMIN, auth, fetchval, loan_body, new_id

# A database URL where nothing listens: the pool's connect is refused.
CLOSED = f"postgresql+asyncpg://huifang:huifang@127.0.0.1:{free_port()}/huifang"


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["status"] == 503
    assert response.headers["X-Request-ID"]


@asynccontextmanager
async def client_of(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        yield client


# --- defect 14: the database down is a 503 ------------------------------------------------


async def test_lists_answer_503_with_retry_after_while_the_database_is_down() -> None:
    common: dict[str, Any] = {"env": "test", "database_url": CLOSED}
    scheduler = scheduler_main.build_app(SchedulerSettings(**common))
    alerts = alerts_main.build_app(AlertsSettings(**common))
    visits = visits_main.build_app(VisitsSettings(**common))
    async with client_of(scheduler) as client:
        assert_unavailable(await client.get("/v1/tasks", headers=ADMIN))
        assert_unavailable(await client.get(f"/v1/loans/{new_id('L')}", headers=ADMIN))
        put = await client.put(
            f"/v1/loans/{new_id('L')}",
            json=loan_body(region="SH"),
            headers=auth("integration", "core-banking"),
        )
        assert_unavailable(put)
    async with client_of(alerts) as client:
        assert_unavailable(await client.get("/v1/alerts", headers=ADMIN))
    async with client_of(visits) as client:
        assert_unavailable(await client.get("/v1/visits", headers=ADMIN))


async def test_a_database_refusing_connections_for_lack_of_slots_is_a_503(infra: Infra) -> None:
    """SQLSTATE 53300 (too many connections), played by a role allowed none."""
    role = f"full_{new_id('r').replace('-', '_')}"
    await fetchval(infra.database_url, f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    url = infra.database_url.replace("postgres@", f"{role}@", 1)
    assert role in url
    app = alerts_main.build_app(AlertsSettings(env="test", database_url=url))
    async with client_of(app) as client:
        assert_unavailable(await client.get("/v1/alerts", headers=ADMIN))


# --- defect 4: a 500 inside the middleware stack ------------------------------------------

crashing = APIRouter()


@crashing.get("/v1/crash")
async def crash() -> None:
    raise RuntimeError("bug while reading borrower 13812345678")


@crashing.get("/v1/fine")
async def fine() -> dict[str, str]:
    return {"status": "fine"}


@contextmanager
def serving(app: FastAPI) -> Iterator[int]:
    """`app` behind a real uvicorn on 127.0.0.1 (its own thread and loop); yields the port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


class JsonLines(logging.Handler):
    """Every record, formatted as the services' handler formats it, when it is emitted."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter("api"))
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@contextmanager
def json_logs() -> Iterator[list[dict[str, Any]]]:
    handler = JsonLines()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)


def test_an_unexpected_error_is_a_problem_500_on_a_connection_kept_alive() -> None:
    settings = ServiceSettings(env="test", database_url=CLOSED)
    app = create_app(settings, title="crashing", routers=[crashing])
    with serving(app) as port, json_logs() as lines:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/v1/crash", headers={"X-Request-ID": "crash-1"} | ADMIN)
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 500
        assert response.getheader("content-type") == "application/problem+json"
        assert body["status"] == 500 and body["instance"] == "/v1/crash"
        assert "13812345678" not in json.dumps(body)
        assert response.getheader("X-Request-ID") == "crash-1"
        assert response.getheader("X-Content-Type-Options") == "nosniff"
        assert (response.getheader("connection") or "").lower() != "close"
        # The same connection answers the next request: the server did not drop it.
        conn.request("GET", "/v1/fine", headers=ADMIN)
        again = conn.getresponse()
        assert (again.status, json.loads(again.read())) == (200, {"status": "fine"})
        conn.close()
    [line] = [line for line in lines if "exc" in line]  # logged once, not again by uvicorn
    assert line["level"] == "ERROR" and line["request_id"] == "crash-1"
    assert "RuntimeError" in line["exc"]
    assert "13812345678" not in json.dumps(line, ensure_ascii=False)


# --- defect 4: a value PostgreSQL refuses is the client's 422, never a 500 ----------------

storing = APIRouter()


@storing.post("/v1/store")
async def store(value: str, session: SessionDep) -> dict[str, int]:
    # A route whose validation has a gap: PostgreSQL, not the schema, refuses the value.
    cast = text("SELECT CAST(CAST(:value AS text) AS integer)")
    stored = await session.execute(cast, {"value": value})
    return {"stored": int(stored.scalar_one())}


@storing.post("/v1/twice")
async def twice(session: SessionDep) -> None:
    await session.execute(text("CREATE TEMP TABLE once (id int PRIMARY KEY) ON COMMIT DROP"))
    await session.execute(text("INSERT INTO once VALUES (1), (1)"))


async def test_a_value_the_database_refuses_is_a_422_and_a_taken_key_a_409(
    infra: Infra,
) -> None:
    app = create_app(
        ServiceSettings(env="test", database_url=infra.database_url),
        title="storing",
        routers=[storing],
    )
    async with client_of(app) as client:
        assert (await client.post("/v1/store?value=42", headers=ADMIN)).json() == {"stored": 42}
        refused = await client.post("/v1/store?value=forty-two", headers=ADMIN)  # 22P02
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["errors"][0]["field"] == "body"
        assert "forty-two" not in refused.text  # values are not echoed: they may be PII
        taken = await client.post("/v1/twice", headers=ADMIN)  # SQLSTATE 23505
        assert taken.status_code == 409, taken.text
