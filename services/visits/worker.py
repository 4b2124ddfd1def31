"""Visits worker: relays the outbox (`visit-completed`) to Kafka.

`python -m services.visits.worker`
"""

from __future__ import annotations

from services.visits.models import health, outbox
from services.visits.settings import VisitsSettings
from shared.worker import worker_main, worker_resources


async def run_worker(settings: VisitsSettings) -> None:
    async with worker_resources(settings, health=health) as resources:
        await resources.relay(outbox).run()


if __name__ == "__main__":
    worker_main(VisitsSettings(), run_worker)
