"""ASGI entry point: `uvicorn services.visits.main:app`."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.visits.api import EVIDENCE_ROUTE, router
from services.visits.driver import CaptureConnections
from services.visits.grants import TaskGrants
from services.visits.loan_regions import LoanRegions
from services.visits.models import health, outbox
from services.visits.rate_limits import RateLimiter
from services.visits.settings import VisitsSettings
from services.visits.stores import evidence_store_for
from shared import heap
from shared.app import create_app
from shared.broker_ledger import consumer_role, relay_role
from shared.db import SessionLimits
from shared.health import WorkerReadiness
from shared.logging import configure_logging
from shared.service_client import ServiceClient


def build_app(
    settings: VisitsSettings | None = None,
    *,
    scheduler_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    settings = settings or VisitsSettings()
    resolved = settings

    # The client opens with the app's lifespan, so a restarted lifespan gets a fresh one.
    async def open_clients(app: FastAPI) -> None:
        app.state.scheduler = ServiceClient.scheduler(
            resolved, caller="visits", transport=scheduler_transport
        )
        app.state.capture_connections = CaptureConnections(app.state.engine)
        app.state.loan_regions = LoanRegions(resolved.http_cache_seconds)

    async def close_clients(app: FastAPI) -> None:
        regions: LoanRegions = app.state.loan_regions
        await regions.close()
        scheduler: ServiceClient = app.state.scheduler
        await scheduler.aclose()
        # Before the engine is disposed: the connections captures kept go back to its pool.
        connections: CaptureConnections = app.state.capture_connections
        await connections.close()

    app = create_app(
        settings,
        title="Huifang visits",
        routers=[router],
        on_startup=open_clients,
        on_shutdown=close_clients,
        body_limits={EVIDENCE_ROUTE: settings.max_evidence_bytes},
        # The worker's relay of visit-completed, and its consumer of loan-registered (the
        # regions of visits recorded before 0006), as the other services report theirs.
        readiness=WorkerReadiness(
            health,
            [consumer_role(settings.consumer_group), relay_role(outbox.fullname)],
            settings.worker_stale_seconds,
        ),
        engine_factory=lambda: capture_engine(resolved),
    )
    app.state.evidence_store = evidence_store_for(settings)
    app.state.task_grants = TaskGrants()
    app.state.capture_limits = RateLimiter("visit captures", settings.visit_captures_per_minute)
    app.state.upload_limits = RateLimiter("evidence uploads", settings.evidence_uploads_per_minute)
    return app


def capture_engine(settings: VisitsSettings) -> AsyncEngine:
    """The API's engine: the services' usual one (shared.db.make_engine: session limits,
    no bound values in logged errors) with a pool the size of its concurrency and no ping
    on checkout.

    A capture is a handful of short statements; SQLAlchemy's pre-ping on asyncpg is three
    more round trips (BEGIN, `;`, ROLLBACK) on every checkout, a third of the capture's
    own, and a pool smaller than the requests in flight opens and closes a connection per
    request past it. Without the ping, a connection that died (PostgreSQL restarted, a
    failover) is found by the request that uses it: SQLAlchemy then drops the whole pool,
    and that request is answered 503 with Retry-After (shared.errors), which the app
    retries under the same Idempotency-Key."""
    limits = SessionLimits(
        lock_timeout_ms=settings.db_lock_timeout_ms,
        idle_in_transaction_ms=settings.db_idle_in_transaction_timeout_ms,
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=False,
        hide_parameters=True,
        connect_args={"server_settings": limits.server_settings()},
    )


configure_logging("visits")
app = build_app()
heap.settle()
