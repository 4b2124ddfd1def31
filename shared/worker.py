"""What every worker process shares: its database sessions and producer, and running
until SIGTERM/SIGINT, then stopping cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import heap
from shared.broker_ledger import consumer_role, relay_role
from shared.db import engine_for, make_session_factory
from shared.health import HealthTables, WorkerHealth
from shared.kafka import EventConsumer, Handler, make_producer
from shared.logging import configure_logging
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerResources:
    settings: ServiceSettings
    sessions: async_sessionmaker[AsyncSession]
    # One producer per worker: the outbox relay and the dead letters share it.
    producer: AIOKafkaProducer
    # Where the worker reports its heartbeat, broker positions and losses (shared/health.py).
    health: HealthTables

    def consumer(
        self, *, group_id: str, handlers: Mapping[str, Handler], inbox_table: Table
    ) -> EventConsumer:
        """A consumer on this worker's database and broker, dead-lettering through its
        producer and reporting its health."""
        return EventConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=group_id,
            handlers=handlers,
            sessions=self.sessions,
            inbox_table=inbox_table,
            producer=self.producer,
            health=WorkerHealth(self.sessions, self.health, consumer_role(group_id)),
            tick_seconds=self.settings.worker_heartbeat_seconds,
            batch_size=self.settings.consumer_batch_size,
            fetch_max_wait_ms=self.settings.consumer_fetch_max_wait_ms,
        )

    def relay(self, outbox: Table) -> OutboxRelay:
        """The relay of `outbox` through this worker's producer, reporting its health."""
        return OutboxRelay(
            self.sessions,
            outbox,
            self.producer,
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            health=WorkerHealth(self.sessions, self.health, relay_role(outbox.fullname)),
            tick_seconds=self.settings.worker_heartbeat_seconds,
        )


@contextlib.asynccontextmanager
async def worker_resources(
    settings: ServiceSettings, *, health: HealthTables
) -> AsyncIterator[WorkerResources]:
    engine = engine_for(settings, pre_ping=False)  # see make_engine
    producer = make_producer(settings.kafka_bootstrap_servers)
    await _start_producer(producer)
    try:
        yield WorkerResources(settings, make_session_factory(engine), producer, health)
    finally:
        await producer.stop()
        await engine.dispose()


async def _start_producer(producer: AIOKafkaProducer) -> None:
    """Start the producer, waiting for a broker that is not reachable yet: the worker
    comes up on its own once it is, instead of exiting."""
    attempt = 0
    while True:
        try:
            await producer.start()
            return
        except KafkaConnectionError as exc:
            attempt += 1
            if attempt == 1:
                log.warning("broker not reachable yet (%s); waiting", exc)
            await asyncio.sleep(min(0.5 * attempt, 5.0))


async def run_until_stopped(main: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    # Cancelling unwinds the consumer: uncommitted offsets are redelivered, which the
    # inbox makes harmless.
    with contextlib.suppress(asyncio.CancelledError):
        await task


def worker_main(settings: S, run_worker: Callable[[S], Coroutine[Any, Any, None]]) -> None:
    """The body of `python -m services.<name>.worker`."""
    configure_logging(f"{settings.service_name}-worker", settings.log_level)
    heap.settle()
    asyncio.run(run_until_stopped(run_worker(settings)))
