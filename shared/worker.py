"""What every worker process shares: its database sessions and producer, and running
until SIGTERM/SIGINT, then stopping cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import make_engine, make_session_factory
from shared.kafka import EventConsumer, Handler, make_producer
from shared.logging import configure_logging
from shared.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)


@dataclass(frozen=True)
class WorkerResources:
    settings: ServiceSettings
    sessions: async_sessionmaker[AsyncSession]
    # One producer per worker: the outbox relay and the dead letters share it.
    producer: AIOKafkaProducer

    def consumer(
        self, *, group_id: str, handlers: Mapping[str, Handler], inbox_table: Table
    ) -> EventConsumer:
        """A consumer on this worker's database and broker, dead-lettering through its
        producer."""
        return EventConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=group_id,
            handlers=handlers,
            sessions=self.sessions,
            inbox_table=inbox_table,
            producer=self.producer,
        )


@contextlib.asynccontextmanager
async def worker_resources(settings: ServiceSettings) -> AsyncIterator[WorkerResources]:
    engine = make_engine(settings.database_url)
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        yield WorkerResources(settings, make_session_factory(engine), producer)
    finally:
        await producer.stop()
        await engine.dispose()


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
    asyncio.run(run_until_stopped(run_worker(settings)))
