"""ASGI entry point: `uvicorn services.scheduler.main:app`."""

from __future__ import annotations

from fastapi import FastAPI

from services.scheduler import policy_api
from services.scheduler.api import IMPORT_ROUTE, VALUATIONS_ROUTE, router
from services.scheduler.models import health, outbox
from services.scheduler.registration import digest_key
from services.scheduler.settings import SchedulerSettings
from shared import heap
from shared.app import create_app
from shared.broker_ledger import consumer_role, relay_role
from shared.health import WorkerReadiness
from shared.logging import configure_logging
from shared.pii import PiiCipher


def build_app(settings: SchedulerSettings | None = None) -> FastAPI:
    settings = settings or SchedulerSettings()
    roles = [consumer_role(settings.consumer_group), relay_role(outbox.fullname)]
    workers = WorkerReadiness(health, roles, settings.worker_stale_seconds)
    app = create_app(
        settings,
        title="Huifang scheduler",
        routers=[router, policy_api.router],
        body_limits={
            IMPORT_ROUTE: settings.max_import_bytes,
            VALUATIONS_ROUTE: settings.max_import_bytes,
        },
        readiness=workers,
    )
    app.state.cipher = PiiCipher(settings.pii_key)
    app.state.registration_digest_key = digest_key(settings.pii_key)
    return app


_settings = SchedulerSettings()
configure_logging("scheduler", _settings.log_level)
app = build_app(_settings)
heap.settle()
