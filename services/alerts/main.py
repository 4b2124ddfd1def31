"""ASGI entry point: `uvicorn services.alerts.main:app`."""

from __future__ import annotations

from fastapi import FastAPI

from services.alerts.api import router
from services.alerts.models import health, outbox
from services.alerts.resolutions_api import router as resolutions_router
from services.alerts.settings import AlertsSettings
from shared import heap
from shared.app import create_app
from shared.broker_ledger import consumer_role, relay_role
from shared.health import WorkerReadiness
from shared.logging import configure_logging


def build_app(settings: AlertsSettings | None = None) -> FastAPI:
    settings = settings or AlertsSettings()
    roles = [consumer_role(settings.consumer_group), relay_role(outbox.fullname)]
    workers = WorkerReadiness(health, roles, settings.worker_stale_seconds)
    return create_app(
        settings, title="Huifang alerts", routers=[router, resolutions_router], readiness=workers
    )


_settings = AlertsSettings()
configure_logging("alerts", _settings.log_level)
app = build_app(_settings)
heap.settle()
