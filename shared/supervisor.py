"""A small process supervisor for the local stack (`make run`, the e2e and fault suites).

A worker or API that exits is started again after a delay that doubles with each exit in
a row (capped), and the run of failures is forgotten once the process has stayed up for a
while, as systemd's `Restart=always` or a Kubernetes restart policy would do. Every exit and
restart is announced: which process, its exit code, the next attempt.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

Announce = Callable[[str], None]


def announce_on_stderr(message: str) -> None:
    print(f"devstack: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff between restarts of a process that keeps exiting."""

    first_delay: float = 1.0
    max_delay: float = 30.0
    # Up this long without exiting counts as healthy: the next exit starts from first_delay.
    healthy_after: float = 30.0

    def delay(self, exits_in_a_row: int) -> float:
        """The wait before restarting after the `exits_in_a_row`-th quick exit (1-based)."""
        if exits_in_a_row < 1:
            raise ValueError("exits_in_a_row counts from 1")
        # min() before the power would overflow for a process that failed all week.
        doublings = min(exits_in_a_row - 1, 32)
        return float(min(self.first_delay * 2**doublings, self.max_delay))

    def exits_in_a_row(self, previous: int, uptime: float) -> int:
        """The run of quick exits after one more exit following `uptime` seconds up."""
        return 1 if uptime >= self.healthy_after else previous + 1


def describe_exit(returncode: int) -> str:
    """`exit code 3`, or `exit code -9 (SIGKILL)` for a process ended by a signal."""
    if returncode < 0:
        try:
            return f"exit code {returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"exit code {returncode}"
    return f"exit code {returncode}"


@dataclass
class Supervised:
    """One process under supervision: how to start it and what became of it."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    exits_in_a_row: int = 0
    restart_at: float | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def spawn(self, now: float) -> None:
        if self._log is None and self.log_path is not None:
            # Appending: a restarted process continues the same log file.
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close_log()
        self.proc = subprocess.Popen(
            list(self.argv), env=dict(self.env), cwd=self.cwd, stdout=self._log, stderr=self._log
        )
        self.started_at = now
        self.restart_at = None

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class Supervisor:
    """Starts processes and keeps them running until `stop()`.

    A background thread runs `check()` every `interval` seconds; a test may call it
    directly, with its own `clock`.
    """

    def __init__(
        self,
        policy: RestartPolicy | None = None,
        *,
        announce: Announce = announce_on_stderr,
        interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or RestartPolicy()
        self._clock = clock
        self.processes: dict[str, Supervised] = {}
        self._announce = announce
        self._interval = interval
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        # Set from a signal handler (Ctrl-C): a plain flag, as an Event could deadlock there.
        self.stopping = False

    def add(self, process: Supervised) -> None:
        if process.name in self.processes:
            raise ValueError(f"a process named {process.name} is already supervised")
        process.spawn(self._clock())
        self.processes[process.name] = process

    def start(self) -> None:
        """Watch the processes from a daemon thread."""
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopped.wait(self._interval):
            self.check()

    def check(self) -> None:
        """Notice exits and schedule their restarts; start what is due."""
        with self._lock:
            if self.stopping or self._stopped.is_set():
                return
            now = self._clock()
            for process in self.processes.values():
                self._check_one(process, now)

    def _check_one(self, process: Supervised, now: float) -> None:
        proc = process.proc
        if proc is None or proc.poll() is None:
            return
        if process.restart_at is None:
            uptime = now - process.started_at
            process.exits_in_a_row = self.policy.exits_in_a_row(process.exits_in_a_row, uptime)
            delay = self.policy.delay(process.exits_in_a_row)
            process.restart_at = now + delay
            self._announce(
                f"{process.name} (pid {proc.pid}) exited with {describe_exit(proc.returncode)} "
                f"after {uptime:.1f} s; next attempt in {delay:.1f} s"
            )
        elif now >= process.restart_at:
            process.spawn(now)
            process.restarts += 1
            assert process.proc is not None
            self._announce(
                f"{process.name} restarted (restart {process.restarts}, pid {process.proc.pid})"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching, then SIGTERM every process and SIGKILL what outlives `timeout`."""
        self.stopping = True
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        # The lock: a check() already past its stopping test finishes before we terminate.
        with self._lock:
            running = [p.proc for p in self.processes.values() if p.proc is not None]
            for proc in running:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for proc in running:
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for process in self.processes.values():
                process.close_log()
            self.processes.clear()
