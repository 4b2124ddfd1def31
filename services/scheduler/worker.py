"""Scheduler worker: plans visits from repayments, completed visits and alerts.

`python -m services.scheduler.worker`
"""

from __future__ import annotations

import asyncio

from services.scheduler import service
from services.scheduler.models import inbox
from services.scheduler.settings import SchedulerSettings
from shared.db import make_engine, make_session_factory
from shared.events import ALERT_RAISED, REPAYMENT_POSTED, VISIT_COMPLETED
from shared.kafka import EventConsumer, make_producer
from shared.logging import configure_logging
from shared.worker import run_until_stopped


async def run_worker(settings: SchedulerSettings) -> None:
    engine = make_engine(settings.database_url)
    producer = make_producer(settings.kafka_bootstrap_servers)  # for dead letters only
    await producer.start()
    try:
        consumer = EventConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.consumer_group,
            handlers={
                REPAYMENT_POSTED: service.on_repayment_posted,
                VISIT_COMPLETED: service.on_visit_completed,
                ALERT_RAISED: service.on_alert_raised,
            },
            sessions=make_session_factory(engine),
            inbox_table=inbox,
            producer=producer,
        )
        await consumer.run()
    finally:
        await producer.stop()
        await engine.dispose()


if __name__ == "__main__":
    settings = SchedulerSettings()
    configure_logging("scheduler-worker", settings.log_level)
    asyncio.run(run_until_stopped(run_worker(settings)))
