"""The whole system as real processes (three uvicorn APIs and three workers) on free
ports, with its own broker and database, driven only through Kafka and HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared import devstack
from tests.conftest import Infra


@dataclass(frozen=True)
class Running:
    urls: dict[str, str]
    bootstrap: str
    log_dir: Path
    stack: devstack.Stack


@pytest.fixture(scope="session")
def running(infra: Infra) -> Iterator[Running]:
    database_url = devstack.with_database(infra.database_url, "huifang_e2e")
    devstack.create_database(infra.database_url, "huifang_e2e")
    for service in devstack.SERVICES:
        devstack.migrate(database_url, service)
    log_dir = infra.pg_data_dir.parent / "e2e-logs"
    log_dir.mkdir()
    with devstack.embedded_broker(devstack.free_port()) as bootstrap:
        asyncio.run(devstack.create_topics(bootstrap))
        ports = {service: devstack.free_port() for service in devstack.SERVICES}
        stack = devstack.Stack(
            database_url,
            bootstrap,
            ports,
            env_extra={"ENV": "test", "LOG_LEVEL": "WARNING", "REPLAN_CHECK_SECONDS": "0"},
        )
        try:
            stack.start_services(log_dir=log_dir)
            yield Running(
                {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}, bootstrap, log_dir, stack
            )
        finally:
            stack.stop_services()
