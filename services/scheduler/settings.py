from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    service_name: str = "scheduler"
    consumer_group: str = "scheduler"
    # The NDJSON loan import (`POST /v1/loans/import`) may be larger than a JSON body.
    max_import_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # The dispatcher (dispatch.py) runs a pass when tasks appear (LISTEN/NOTIFY) and at
    # least this often, assigning up to `dispatch_batch_size` tasks a transaction.
    dispatch_period_seconds: float = Field(default=1.0, gt=0, le=60)
    dispatch_batch_size: int = Field(default=1000, ge=1, le=10_000)
