"""Visits worker: relays the outbox (`visit-completed`) to Kafka.

`python -m services.visits.worker`
"""

from __future__ import annotations

import asyncio

from services.visits.models import outbox
from services.visits.settings import VisitsSettings
from shared.db import make_engine, make_session_factory
from shared.kafka import make_producer
from shared.logging import configure_logging
from shared.outbox import OutboxRelay
from shared.worker import run_until_stopped


async def run_worker(settings: VisitsSettings) -> None:
    engine = make_engine(settings.database_url)
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await OutboxRelay(make_session_factory(engine), outbox, producer).run()
    finally:
        await producer.stop()
        await engine.dispose()


if __name__ == "__main__":
    configure_logging("visits-worker")
    asyncio.run(run_until_stopped(run_worker(VisitsSettings())))
