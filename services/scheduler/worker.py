"""Scheduler worker: plans visits from repayments, completed visits, alerts and approved
repayment plans,
dispatches the planned tasks to agents, relays `loan-registered` from the scheduler's
outbox, and re-plans the portfolio once a day and after a new policy version.

`python -m services.scheduler.worker`
"""

from __future__ import annotations

import asyncio

from services.scheduler import planning
from services.scheduler.dispatch import Dispatcher
from services.scheduler.models import health, inbox, outbox
from services.scheduler.replan import DailyReplan
from services.scheduler.settings import SchedulerSettings
from shared.events import (
    ALERT_RAISED,
    REPAYMENT_PLAN_APPROVED,
    REPAYMENT_POSTED,
    VISIT_COMPLETED,
    AlertRaised,
    RepaymentPlanApproved,
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
                REPAYMENT_PLAN_APPROVED: TopicHandler(
                    RepaymentPlanApproved, planning.on_repayment_plans
                ),
            },
            inbox_table=inbox,
        )
        dispatcher = Dispatcher(
            resources.sessions,
            settings.database_url,
            period_seconds=settings.dispatch_period_seconds,
            batch_size=settings.dispatch_batch_size,
        )
        relay = resources.relay(outbox)
        replanner = DailyReplan(
            resources.sessions,
            settings.database_url,
            period_seconds=settings.replan_check_seconds,
            chunk=settings.replan_chunk_loans,
            parallel=settings.replan_parallel,
        )
        # A TaskGroup: if any loop dies, the others are cancelled and the worker exits (and
        # is restarted) instead of limping on half-working.
        async with asyncio.TaskGroup() as group:
            group.create_task(consumer.run(), name="consumer")
            group.create_task(dispatcher.run(), name="dispatcher")
            group.create_task(relay.run(), name="relay")
            group.create_task(replanner.run(), name="replan")


if __name__ == "__main__":
    worker_main(SchedulerSettings(), run_worker)
