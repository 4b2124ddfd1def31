"""Visits worker: relays the outbox (`visit-completed`) to Kafka, projects loans' regions
from `loan-registered` (regions.py), and sweeps expired idempotency keys, stale drafts and
evidence never attached to a visit (retention.py).

`python -m services.visits.worker`
"""

from __future__ import annotations

import asyncio

from services.visits import regions, retention
from services.visits.models import health, inbox, outbox
from services.visits.settings import VisitsSettings
from services.visits.stores import evidence_store_for
from shared.events import LOAN_REGISTERED, LoanRegistered
from shared.kafka import TopicHandler
from shared.worker import worker_main, worker_resources


async def run_worker(settings: VisitsSettings) -> None:
    # A task group: if the relay or the consumer stops with an error, the rest stop too.
    async with (
        worker_resources(settings, health=health) as resources,
        asyncio.TaskGroup() as group,
    ):
        consumer = resources.consumer(
            group_id=settings.consumer_group,
            handlers={LOAN_REGISTERED: TopicHandler(LoanRegistered, regions.on_loans_registered)},
            inbox_table=inbox,
        )
        group.create_task(consumer.run())
        group.create_task(resources.relay(outbox).run())
        store = evidence_store_for(settings)
        group.create_task(retention.run(resources.sessions, settings, store))


if __name__ == "__main__":
    worker_main(VisitsSettings(), run_worker)
