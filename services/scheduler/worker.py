"""Scheduler worker: plans visits from repayments, completed visits and alerts, and relays
`loan-registered` from the scheduler's outbox.

`python -m services.scheduler.worker`
"""

from __future__ import annotations

import asyncio

from services.scheduler import service
from services.scheduler.models import health, inbox, outbox
from services.scheduler.settings import SchedulerSettings
from shared.events import (
    ALERT_RAISED,
    REPAYMENT_POSTED,
    VISIT_COMPLETED,
    AlertRaised,
    RepaymentPosted,
    VisitCompleted,
)
from shared.kafka import TopicHandler
from shared.worker import worker_main, worker_resources


async def run_worker(settings: SchedulerSettings) -> None:
    async with worker_resources(settings, health=health) as resources:
        consumer = resources.consumer(
            group_id=settings.consumer_group,
            handlers={
                REPAYMENT_POSTED: TopicHandler(RepaymentPosted, service.on_repayments),
                VISIT_COMPLETED: TopicHandler(VisitCompleted, service.on_visits),
                ALERT_RAISED: TopicHandler(AlertRaised, service.on_alerts),
            },
            inbox_table=inbox,
        )
        relay = resources.relay(outbox)
        # A TaskGroup: if either loop dies, the other is cancelled and the worker exits
        # (and is restarted) instead of limping on half-working.
        async with asyncio.TaskGroup() as group:
            group.create_task(consumer.run())
            group.create_task(relay.run())


if __name__ == "__main__":
    worker_main(SchedulerSettings(), run_worker)
