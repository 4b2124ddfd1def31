"""ASGI entry point: `uvicorn services.alerts.main:app`."""

from __future__ import annotations

from fastapi import FastAPI

from services.alerts.api import router
from services.alerts.settings import AlertsSettings
from shared.app import create_app
from shared.logging import configure_logging


def build_app(settings: AlertsSettings | None = None) -> FastAPI:
    settings = settings or AlertsSettings()
    return create_app(settings, title="Huifang alerts", routers=[router])


_settings = AlertsSettings()
configure_logging("alerts", _settings.log_level)
app = build_app(_settings)
