"""The visits API's readiness covers its worker's consumer of `loan-registered` (the
projection of loans' regions, services/visits/regions.py) beside its outbox relay, as the
other services' readiness covers theirs (shared/health.py), on the real database and
broker."""

from __future__ import annotations

from typing import Any

import httpx

from services.visits import main as visits_main
from services.visits.settings import VisitsSettings
from shared.broker_ledger import consumer_role
from tests.integration.conftest import System
from tests.support import eventually, fetchval, new_id


async def _readiness(app: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://visits") as client:
        return await client.get("/readyz")


async def _report(system: System, role: str, seconds_ago: int) -> None:
    """A heartbeat of a member of `role`, as a worker writes it (WorkerHealth)."""
    await fetchval(
        system.database_url,
        "INSERT INTO visits.worker_heartbeats (member, role, started_at, heartbeat_at, detail)"
        " VALUES ($1, $2, now() - interval '1 hour', now() - make_interval(secs => $3),"
        ' \'{"kind": "consumer", "broker": "ok"}\'::jsonb)'
        " ON CONFLICT (member) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        f"{role}@test:1",
        role,
        float(seconds_ago),
    )


async def test_the_visits_workers_consumer_reports_into_readiness(system: System) -> None:
    async def assigned() -> dict[str, Any] | None:
        response = await system.visits.get("/readyz")
        if response.status_code != 200:
            return None
        consumer: dict[str, Any] = response.json()["checks"]["consumer:visits"]
        return consumer if consumer["detail"].get("assignment") else None

    consumer = await eventually(assigned)
    assert consumer["ok"] is True
    assert consumer["detail"]["broker"] == "ok"
    assert consumer["detail"]["seconds_ago"] < 30
    assert all(tp.startswith("loan-registered/") for tp in consumer["detail"]["assignment"])


async def test_visits_is_not_ready_while_its_consumer_is_silent(system: System) -> None:
    # A consumer group of its own: its consumer never runs, the relay is the system's.
    group = new_id("visits-ready")
    role = consumer_role(group)
    settings = VisitsSettings(
        env="test",
        database_url=system.database_url,
        kafka_bootstrap_servers=system.bootstrap,
        consumer_group=group,
    )
    app = visits_main.build_app(settings)
    try:
        async with app.router.lifespan_context(app):
            never = await _readiness(app)
            assert never.status_code == 503, never.text
            assert never.headers["content-type"] == "application/problem+json"
            body = never.json()
            assert body["checks"][role] == {"ok": False, "detail": "never reported"}
            assert role in body["detail"]
            assert body["checks"]["relay:visits.outbox"]["ok"] is True

            await _report(system, role, seconds_ago=0)
            fresh = await _readiness(app)
            assert fresh.status_code == 200, fresh.text
            assert fresh.json()["checks"][role]["ok"] is True

            stale = settings.worker_stale_seconds + 5
            await _report(system, role, seconds_ago=int(stale))
            silent = await _readiness(app)
            assert silent.status_code == 503, silent.text
            assert silent.json()["checks"][role]["ok"] is False
    finally:
        await fetchval(
            system.database_url, "DELETE FROM visits.worker_heartbeats WHERE role = $1", role
        )
