"""ASGI entry point: `uvicorn services.visits.main:app`."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from services.visits.api import EVIDENCE_ROUTE, router
from services.visits.evidence_store import LocalDirectoryStore
from services.visits.grants import TaskGrants
from services.visits.models import health, outbox
from services.visits.rate_limits import RateLimiter
from services.visits.settings import VisitsSettings
from shared.app import create_app
from shared.broker_ledger import relay_role
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
    async def open_scheduler(app: FastAPI) -> None:
        app.state.scheduler = ServiceClient.scheduler(
            resolved, caller="visits", transport=scheduler_transport
        )

    async def close_scheduler(app: FastAPI) -> None:
        scheduler: ServiceClient = app.state.scheduler
        await scheduler.aclose()

    app = create_app(
        settings,
        title="Huifang visits",
        routers=[router],
        on_startup=open_scheduler,
        on_shutdown=close_scheduler,
        body_limits={EVIDENCE_ROUTE: settings.max_evidence_bytes},
        readiness=WorkerReadiness(
            health, [relay_role(outbox.fullname)], settings.worker_stale_seconds
        ),
    )
    app.state.evidence_store = LocalDirectoryStore(settings.evidence_dir)
    app.state.task_grants = TaskGrants()
    app.state.capture_limits = RateLimiter("visit captures", settings.visit_captures_per_minute)
    app.state.upload_limits = RateLimiter("evidence uploads", settings.evidence_uploads_per_minute)
    return app


configure_logging("visits")
app = build_app()
