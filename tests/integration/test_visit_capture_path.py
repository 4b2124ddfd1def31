"""The capture path the bench measures (services/visits/append.py), on the real database: the
chain entry hashed in SQL is the one `chain.entry_hash` computes, the chain head follows the
chain, a retry of a field visit with photos replays, and the scheduler is asked once per
agent and loan."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import literal, select
from sqlalchemy.exc import DBAPIError

from services.scheduler import main as scheduler_main
from services.scheduler.settings import SchedulerSettings
from services.visits import chain
from services.visits import main as visits_main
from services.visits.append import entry_hash_sql
from services.visits.driver import CaptureConnections
from services.visits.settings import VisitsSettings
from shared.db import make_engine
from shared.errors import sqlstate
from tests.integration.conftest import System
from tests.integration.test_visit_chain import verify_loan
from tests.integration.test_visit_evidence import field_visit
from tests.integration.test_visits import assign, post_visit, visit_body
from tests.support import auth, fetchrow, new_id, upload_photo


async def test_the_sql_entry_hash_is_the_chains(system: System) -> None:
    cases = [(1, chain.GENESIS, "ab" * 32), (2, "cd" * 32, "ef" * 32), (1234, "01" * 32, "9f" * 32)]
    engine = make_engine(system.database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            for seq, prev_hash, payload in cases:
                stmt = select(entry_hash_sql(literal(seq), literal(prev_hash), literal(payload)))
                computed = (await connection.execute(stmt)).scalar_one()
                assert computed == chain.entry_hash(seq, prev_hash, payload)
    finally:
        await engine.dispose()


async def test_the_chain_head_follows_concurrent_captures_of_a_loan(system: System) -> None:
    job = await assign(system)
    responses = await asyncio.gather(
        *(post_visit(system, job.headers, visit_body(job.loan_id)) for _ in range(8))
    )
    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    head = await fetchrow(
        system.database_url,
        "SELECT seq, entry_hash, prev_hash FROM visits.chain_heads WHERE loan_id = $1",
        job.loan_id,
    )
    last = await fetchrow(
        system.database_url,
        "SELECT seq, entry_hash, prev_hash FROM visits.visit_chain WHERE loan_id = $1"
        " ORDER BY seq DESC LIMIT 1",
        job.loan_id,
    )
    assert tuple(head) == tuple(last)
    assert head["seq"] == 8
    result = await verify_loan(system, job.loan_id)
    assert result["intact"] is True
    assert result["entries_checked"] == 8


async def test_a_retry_of_a_field_visit_with_photos_replays(system: System) -> None:
    job = await assign(system)
    photo = await upload_photo(system.visits, job.headers)
    body = field_visit(job, [photo])
    key = new_id("K")
    first = await post_visit(system, job.headers, body, key)
    assert first.status_code == 201, first.text
    again = await post_visit(system, job.headers, body, key)
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert [e["evidence_id"] for e in again.json()["evidence"]] == [photo]


class CountingTransport(httpx.AsyncBaseTransport):
    """The scheduler as the visits API reaches it, counting what it is asked."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.asked: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.url.path)
        return await self.inner.handle_async_request(request)


async def test_the_scheduler_is_asked_once_per_agent_and_loan(system: System) -> None:
    job = await assign(system)
    common: dict[str, Any] = {"env": "test", "database_url": system.database_url}
    scheduler_app = scheduler_main.build_app(
        SchedulerSettings(**common, kafka_bootstrap_servers=system.bootstrap)
    )
    to_scheduler = CountingTransport(httpx.ASGITransport(app=scheduler_app))
    visits_app = visits_main.build_app(
        VisitsSettings(**common, kafka_bootstrap_servers=system.bootstrap),
        scheduler_transport=to_scheduler,
    )
    async with (
        scheduler_app.router.lifespan_context(scheduler_app),
        visits_app.router.lifespan_context(visits_app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=visits_app), base_url="http://v"
        ) as visits,
    ):
        for _ in range(3):
            response = await visits.post(
                "/v1/visits",
                json=visit_body(job.loan_id),
                headers=job.headers | {"Idempotency-Key": new_id("K")},
            )
            assert response.status_code == 201, response.text
        # Another agent on the same loan is asked about: the yes was this agent's.
        stranger = auth("agent", new_id("AG"))
        refused = await visits.post(
            "/v1/visits",
            json=visit_body(job.loan_id),
            headers=stranger | {"Idempotency-Key": new_id("K")},
        )
        assert refused.status_code == 404, refused.text
    task_lookups = [path for path in to_scheduler.asked if path == "/v1/tasks"]
    assert len(task_lookups) == 2  # the agent's first capture, and the stranger's


async def test_capture_connections_are_kept_and_a_closed_one_is_replaced(system: System) -> None:
    engine = make_engine(system.database_url, pool_size=2, pre_ping=False)
    connections = CaptureConnections(engine, max_kept=1)
    try:
        async with connections.connection() as first:
            assert await first.fetchval("SELECT 1") == 1
        async with connections.connection() as again:
            # Kept, not given back to the pool and checked out anew.
            assert again is first
        await first.close()  # as a database restart leaves it
        async with connections.connection() as replacement:
            assert replacement is not first
            assert await replacement.fetchval("SELECT 2") == 2
    finally:
        await connections.close()
        await engine.dispose()


async def test_a_database_error_on_a_capture_connection_is_sqlalchemys(system: System) -> None:
    engine = make_engine(system.database_url, pool_size=1, pre_ping=False)
    connections = CaptureConnections(engine)
    try:
        with pytest.raises(DBAPIError) as raised:
            async with connections.connection() as connection:
                await connection.execute("SELECT 1 / 0")
        # The problem handlers read the SQLSTATE (shared/errors.py): 22012 is the client's.
        assert sqlstate(raised.value) == "22012"
        assert not raised.value.connection_invalidated
        async with connections.connection() as kept:
            assert await kept.fetchval("SELECT 3") == 3
    finally:
        await connections.close()
        await engine.dispose()
