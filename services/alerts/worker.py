"""Alerts worker: raises alerts from repayments and visits, and relays `alert-raised`.

`python -m services.alerts.worker`
"""

from __future__ import annotations

import asyncio
import functools

import httpx

from services.alerts import service
from services.alerts.loans import SchedulerLoans
from services.alerts.models import health, inbox, outbox
from services.alerts.settings import AlertsSettings
from shared.events import REPAYMENT_POSTED, VISIT_COMPLETED, RepaymentPosted, VisitCompleted
from shared.kafka import TopicHandler
from shared.service_client import ServiceClient
from shared.worker import worker_main, worker_resources


async def run_worker(
    settings: AlertsSettings, *, scheduler_transport: httpx.AsyncBaseTransport | None = None
) -> None:
    scheduler = ServiceClient.scheduler(settings, caller="alerts", transport=scheduler_transport)
    try:
        async with worker_resources(settings, health=health) as resources:
            loan_of = SchedulerLoans(scheduler).facts
            consumer = resources.consumer(
                group_id=settings.consumer_group,
                handlers={
                    REPAYMENT_POSTED: TopicHandler(
                        RepaymentPosted, functools.partial(service.on_repayments, loan_of=loan_of)
                    ),
                    VISIT_COMPLETED: TopicHandler(
                        VisitCompleted, functools.partial(service.on_visits, loan_of=loan_of)
                    ),
                },
                inbox_table=inbox,
            )
            relay = resources.relay(outbox)
            # A TaskGroup: if either loop dies, the other is cancelled and the worker exits
            # (and is restarted) instead of limping on half-working.
            async with asyncio.TaskGroup() as group:
                group.create_task(consumer.run())
                group.create_task(relay.run())
    finally:
        await scheduler.aclose()


if __name__ == "__main__":
    worker_main(AlertsSettings(), run_worker)
