from __future__ import annotations

from shared.settings import ServiceSettings


class VisitsSettings(ServiceSettings):
    service_name: str = "visits"
