from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    service_name: str = "scheduler"
    consumer_group: str = "scheduler"
    # The NDJSON loan import (`POST /v1/loans/import`) may be larger than a JSON body.
    max_import_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
