"""Visits worker: relays the outbox (`visit-completed`) to Kafka, and sweeps expired
idempotency keys, stale drafts and evidence never attached to a visit (retention.py).

`python -m services.visits.worker`
"""

from __future__ import annotations

import asyncio

from services.visits import retention
from services.visits.models import health, outbox
from services.visits.settings import VisitsSettings
from services.visits.stores import evidence_store_for
from shared.worker import worker_main, worker_resources


async def run_worker(settings: VisitsSettings) -> None:
    # A task group: if the relay stops with an error, the sweeps stop with it.
    async with (
        worker_resources(settings, health=health) as resources,
        asyncio.TaskGroup() as group,
    ):
        group.create_task(resources.relay(outbox).run())
        store = evidence_store_for(settings)
        group.create_task(retention.run(resources.sessions, settings, store))


if __name__ == "__main__":
    worker_main(VisitsSettings(), run_worker)
