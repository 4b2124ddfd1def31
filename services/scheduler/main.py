"""ASGI entry point: `uvicorn services.scheduler.main:app`."""

from __future__ import annotations

from fastapi import FastAPI

from services.scheduler.api import IMPORT_ROUTE, router
from services.scheduler.settings import SchedulerSettings
from shared.app import create_app
from shared.logging import configure_logging
from shared.pii import PiiCipher


def build_app(settings: SchedulerSettings | None = None) -> FastAPI:
    settings = settings or SchedulerSettings()
    app = create_app(
        settings,
        title="Huifang scheduler",
        routers=[router],
        body_limits={IMPORT_ROUTE: settings.max_import_bytes},
    )
    app.state.cipher = PiiCipher(settings.pii_key)
    return app


_settings = SchedulerSettings()
configure_logging("scheduler", _settings.log_level)
app = build_app(_settings)
