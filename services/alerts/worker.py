"""Alerts worker: projects loan facts from `loan-registered`, raises alerts from repayments
and visits, relays `alert-raised`, sweeps the events parked waiting for their loan, and
sends alerts nobody acknowledged in time to the supervisor queue (services/alerts/sla.py).

It asks no other service anything: the loan facts its rules need are its own projection.

`python -m services.alerts.worker`
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from services.alerts import rules, rules_admin, service
from services.alerts.models import health, inbox, outbox
from services.alerts.parking import PARKING_ROLE, ParkingSweep
from services.alerts.settings import AlertsSettings
from services.alerts.sla import SlaSweep, deadlines
from shared.dead_letter_sender import DeadLetterSender
from shared.events import (
    LOAN_REGISTERED,
    REPAYMENT_POSTED,
    VISIT_COMPLETED,
    LoanRegistered,
    RepaymentPosted,
    VisitCompleted,
)
from shared.failures import backoff_seconds
from shared.health import WorkerHealth
from shared.kafka import TopicHandler
from shared.worker import WorkerResources, worker_main, worker_resources


async def run_worker(settings: AlertsSettings) -> None:
    async with worker_resources(settings, health=health) as resources:
        # The rules this code raises alerts by, under the version every alert records.
        await rules_admin.load_into(resources.sessions, rules.current())
        consumer = resources.consumer(
            group_id=settings.consumer_group,
            handlers={
                LOAN_REGISTERED: TopicHandler(LoanRegistered, service.on_loans_registered),
                REPAYMENT_POSTED: TopicHandler(RepaymentPosted, service.on_repayments),
                VISIT_COMPLETED: TopicHandler(VisitCompleted, service.on_visits),
            },
            inbox_table=inbox,
        )
        relay = resources.relay(outbox)
        sweep = parking_sweep(settings, resources)
        sla = SlaSweep(
            resources.sessions,
            deadlines(settings.alert_ack_sla_minutes),
            every_seconds=settings.sla_sweep_seconds,
        )
        # A TaskGroup: if any loop dies, the others are cancelled and the worker exits
        # (and is restarted) instead of limping on half-working.
        async with asyncio.TaskGroup() as group:
            group.create_task(consumer.run())
            group.create_task(relay.run())
            group.create_task(sweep.run())
            group.create_task(sla.run())


def parking_sweep(settings: AlertsSettings, resources: WorkerResources) -> ParkingSweep:
    """The sweep of parked events, dead-lettering as the consumer group does."""
    dead_letters = DeadLetterSender(
        resources.producer,
        settings.consumer_group,
        lambda attempt: backoff_seconds(attempt, base=0.5, cap=10.0),
    )
    return ParkingSweep(
        resources.sessions,
        dead_letters,
        grace=timedelta(seconds=settings.park_grace_seconds),
        every_seconds=settings.park_sweep_seconds,
        health=WorkerHealth(resources.sessions, resources.health, PARKING_ROLE),
    )


if __name__ == "__main__":
    worker_main(AlertsSettings(), run_worker)
