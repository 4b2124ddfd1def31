"""Test infrastructure: a real embedded PostgreSQL and a real Tansu broker, started once
per session on their own data folder and port (so `make test` runs beside `make run`)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from shared import devstack
from tests import watchdog

# The stuck-test watchdog's hook and fixture, registered as this conftest's own.
pytest_runtest_protocol = watchdog.pytest_runtest_protocol
watched_loop = watchdog.watched_loop

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Infra:
    database_url: str
    bootstrap: str
    pg_data_dir: Path


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """PostgreSQL + broker, with every service's migrations run from an empty schema."""
    (ROOT / ".data").mkdir(exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="test-", dir=ROOT / ".data")) / "pg"
    watchdog.own_database(data_dir)
    try:
        with (
            devstack.embedded_postgres(data_dir) as database_url,
            devstack.embedded_broker(devstack.free_port()) as bootstrap,
        ):
            devstack.reset_schemas(database_url)
            for service in devstack.SERVICES:
                devstack.migrate(database_url, service)
            import asyncio

            asyncio.run(devstack.create_topics(bootstrap))
            yield Infra(database_url, bootstrap, data_dir)
    finally:
        shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
async def producer(infra: Infra) -> AsyncIterator[AIOKafkaProducer]:
    """Plays core banking (or any raw client) producing to the broker."""
    prod = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, enable_idempotence=False)
    await prod.start()
    yield prod
    await prod.stop()
