"""Scheduler worker: plans visits from repayments, completed visits and alerts, and
dispatches the planned tasks to agents.

`python -m services.scheduler.worker`
"""

from __future__ import annotations

import asyncio

from services.scheduler import planning
from services.scheduler.dispatch import Dispatcher
from services.scheduler.models import health, inbox
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
                REPAYMENT_POSTED: TopicHandler(RepaymentPosted, planning.on_repayments),
                VISIT_COMPLETED: TopicHandler(VisitCompleted, planning.on_visits),
                ALERT_RAISED: TopicHandler(AlertRaised, planning.on_alerts),
            },
            inbox_table=inbox,
        )
        dispatcher = Dispatcher(
            resources.sessions,
            settings.database_url,
            period_seconds=settings.dispatch_period_seconds,
            batch_size=settings.dispatch_batch_size,
        )
        # Either stopping stops the worker (and the supervisor restarts it).
        async with asyncio.TaskGroup() as group:
            group.create_task(consumer.run(), name="consumer")
            group.create_task(dispatcher.run(), name="dispatcher")


if __name__ == "__main__":
    worker_main(SchedulerSettings(), run_worker)
