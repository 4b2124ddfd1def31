"""The three services in-process (ASGI) with their workers as tasks in the current loop,
against a given PostgreSQL and broker. Used by the integration tests and the benchmark."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from services.alerts import main as alerts_main
from services.alerts import worker as alerts_worker
from services.alerts.settings import AlertsSettings
from services.scheduler import main as scheduler_main
from services.scheduler import worker as scheduler_worker
from services.scheduler.settings import SchedulerSettings
from services.visits import main as visits_main
from services.visits import worker as visits_worker
from services.visits.settings import VisitsSettings


@dataclass(frozen=True)
class System:
    scheduler: httpx.AsyncClient
    visits: httpx.AsyncClient
    alerts: httpx.AsyncClient
    bootstrap: str
    database_url: str


def _client(app: FastAPI, base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


@contextlib.asynccontextmanager
async def in_process_system(database_url: str, bootstrap: str) -> AsyncIterator[System]:
    common: dict[str, Any] = {
        "env": "test",
        "database_url": database_url,
        "kafka_bootstrap_servers": bootstrap,
    }
    # The worker's daily portfolio re-plan would re-plan every test's loans in the middle of
    # the suite: the tests that need it run it scoped to their own region.
    scheduler_settings = SchedulerSettings(**common, replan_check_seconds=0)
    # One agent drains a 100-visit offline queue twice, the benchmark captures as fast as
    # it can: the per-agent rate limits are tested on an app of their own
    # (tests/integration/test_visit_evidence.py), not here.
    visits_settings = VisitsSettings(
        **common, visit_captures_per_minute=1_000_000, evidence_uploads_per_minute=1_000_000
    )
    alerts_settings = AlertsSettings(**common)

    scheduler_app = scheduler_main.build_app(scheduler_settings)
    # Visits reach the scheduler over HTTP; in-process here, same code path.
    to_scheduler = httpx.ASGITransport(app=scheduler_app)
    visits_app = visits_main.build_app(visits_settings, scheduler_transport=to_scheduler)
    alerts_app = alerts_main.build_app(alerts_settings)

    async with contextlib.AsyncExitStack() as stack:
        for app in (scheduler_app, visits_app, alerts_app):
            await stack.enter_async_context(app.router.lifespan_context(app))
        workers = [
            asyncio.create_task(scheduler_worker.run_worker(scheduler_settings)),
            asyncio.create_task(visits_worker.run_worker(visits_settings)),
            asyncio.create_task(alerts_worker.run_worker(alerts_settings)),
        ]
        running = System(
            _client(scheduler_app, "http://scheduler"),
            _client(visits_app, "http://visits"),
            _client(alerts_app, "http://alerts"),
            bootstrap,
            database_url,
        )
        clients = (running.scheduler, running.visits, running.alerts)
        try:
            yield running
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            for client in clients:
                await client.aclose()
