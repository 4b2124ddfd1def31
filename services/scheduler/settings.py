from __future__ import annotations

from shared.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    service_name: str = "scheduler"
    consumer_group: str = "scheduler"
