from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    service_name: str = "scheduler"
    consumer_group: str = "scheduler"
    # The NDJSON loan import (`POST /v1/loans/import`) is read as a stream, a line and a
    # chunk of lines at a time, so its size costs time, not memory. A lender's whole
    # portfolio must fit: a million loans are ~0.8 GB of NDJSON; 4 GiB leaves room for longer
    # lines and bigger books while still refusing an endless body.
    max_import_bytes: int = Field(default=4 * 1024**3, gt=0)
    # The dispatcher (dispatch.py) runs a pass when tasks appear (LISTEN/NOTIFY) and at
    # least this often, assigning up to `dispatch_batch_size` tasks a transaction.
    dispatch_period_seconds: float = Field(default=1.0, gt=0, le=60)
    dispatch_batch_size: int = Field(default=1000, ge=1, le=10_000)
    # The portfolio re-plan (replan.py) runs once a day and after a new policy version is
    # installed: the worker checks whether one is due this often (the first check one period
    # after it starts); 0 leaves the re-plan to `python -m services.scheduler.replan`.
    replan_check_seconds: float = Field(default=300.0, ge=0, le=86_400)
    # Loans per re-plan transaction (a chunk of loan ids).
    replan_chunk_loans: int = Field(default=50_000, ge=100, le=1_000_000)
    # Chunks re-planned at a time (each its own connection and transaction): one per core.
    replan_parallel: int = Field(default=2, ge=1, le=16)
