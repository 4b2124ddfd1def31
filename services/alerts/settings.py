from __future__ import annotations

from shared.settings import ServiceSettings


class AlertsSettings(ServiceSettings):
    service_name: str = "alerts"
    consumer_group: str = "alerts"
