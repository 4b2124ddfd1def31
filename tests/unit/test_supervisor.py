"""The process supervisor behind `make run`: backoff, announcements, stopping. Real child
processes (a sleeping Python), a test clock for the backoff."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.supervisor import RestartPolicy, Supervised, Supervisor, describe_exit

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_backoff_doubles_from_the_first_delay_up_to_the_cap() -> None:
    policy = RestartPolicy(first_delay=1.0, max_delay=30.0)
    assert [policy.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert policy.delay(10_000) == 30.0


def test_a_healthy_run_forgets_the_earlier_exits() -> None:
    policy = RestartPolicy(healthy_after=30.0)
    assert policy.exits_in_a_row(previous=5, uptime=29.9) == 6
    assert policy.exits_in_a_row(previous=5, uptime=30.0) == 1


def test_an_exit_is_described_by_its_code_or_signal() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-9) == "exit code -9 (SIGKILL)"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def said() -> list[str]:
    return []


@pytest.fixture
def supervisor(clock: Clock, said: list[str]) -> Iterator[Supervisor]:
    policy = RestartPolicy(first_delay=1.0, max_delay=4.0, healthy_after=10.0)
    sup = Supervisor(policy, announce=said.append, clock=clock)
    yield sup
    sup.stop(timeout=5)


def _kill(sup: Supervisor, name: str) -> int:
    process = sup.processes[name]
    assert process.proc is not None
    pid = process.proc.pid
    os.kill(pid, signal.SIGKILL)
    process.proc.wait()
    return pid


def test_a_killed_process_is_restarted_after_a_growing_delay(
    supervisor: Supervisor, clock: Clock, said: list[str]
) -> None:
    supervisor.add(Supervised("scheduler-worker", SLEEPER, dict(os.environ), Path.cwd()))
    first = _kill(supervisor, "scheduler-worker")
    clock.now += 2.0
    supervisor.check()
    assert said == [
        f"scheduler-worker (pid {first}) exited with exit code -9 (SIGKILL) after 2.0 s; "
        "next attempt in 1.0 s"
    ]
    clock.now += 0.9
    supervisor.check()
    assert supervisor.processes["scheduler-worker"].pid is None  # not yet
    clock.now += 0.1
    supervisor.check()
    second = supervisor.processes["scheduler-worker"].pid
    assert second is not None and second != first
    assert said[-1] == f"scheduler-worker restarted (restart 1, pid {second})"

    # Killed again soon after: the delay doubles.
    _kill(supervisor, "scheduler-worker")
    clock.now += 1.0
    supervisor.check()
    assert said[-1].endswith("next attempt in 2.0 s")
    clock.now += 2.0
    supervisor.check()
    assert supervisor.processes["scheduler-worker"].restarts == 2

    # After a healthy stretch the next exit starts from the first delay again.
    clock.now += 10.0
    _kill(supervisor, "scheduler-worker")
    supervisor.check()
    assert said[-1].endswith("after 10.0 s; next attempt in 1.0 s")


def test_a_process_that_keeps_failing_is_retried_at_the_cap(
    supervisor: Supervisor, clock: Clock, said: list[str]
) -> None:
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    supervisor.add(Supervised("alerts-api", failing, dict(os.environ), Path.cwd()))
    delays = []
    for _ in range(5):
        process = supervisor.processes["alerts-api"]
        assert process.proc is not None
        process.proc.wait()
        supervisor.check()
        assert "exited with exit code 3" in said[-1]
        delays.append(said[-1].rsplit(" in ", 1)[1])
        clock.now += 4.0
        supervisor.check()
    assert delays == ["1.0 s", "2.0 s", "4.0 s", "4.0 s", "4.0 s"]


def test_nothing_is_restarted_once_stopping(
    supervisor: Supervisor, clock: Clock, said: list[str]
) -> None:
    supervisor.add(Supervised("visits-worker", SLEEPER, dict(os.environ), Path.cwd()))
    # Ctrl-C: the signal handler sets the flag; the children it ended stay ended.
    supervisor.stopping = True
    _kill(supervisor, "visits-worker")
    clock.now += 60.0
    supervisor.check()
    assert said == []
    assert supervisor.processes["visits-worker"].pid is None


def test_stop_ends_every_process(supervisor: Supervisor) -> None:
    for name in ("scheduler-api", "scheduler-worker"):
        supervisor.add(Supervised(name, SLEEPER, dict(os.environ), Path.cwd()))
    procs = [p.proc for p in supervisor.processes.values()]
    supervisor.start()
    supervisor.stop(timeout=5)
    assert all(proc is not None and proc.returncode == -signal.SIGTERM for proc in procs)
    assert supervisor.processes == {}


def test_the_watching_thread_restarts_and_logs_to_the_same_file(tmp_path: Path) -> None:
    said: list[str] = []
    sup = Supervisor(RestartPolicy(first_delay=0.1), announce=said.append, interval=0.05)
    log_path = tmp_path / "alerts-worker.log"
    talker = [sys.executable, "-c", "print('up', flush=True); import time; time.sleep(60)"]
    sup.add(Supervised("alerts-worker", talker, dict(os.environ), Path.cwd(), log_path))
    sup.start()
    deadline = time.monotonic() + 10
    try:
        while not log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        first = _kill(sup, "alerts-worker")
        while sup.processes["alerts-worker"].restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sup.processes["alerts-worker"].pid not in (None, first)
        while log_path.read_text().count("up") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log_path.read_text() == "up\nup\n"
        assert "exit code -9 (SIGKILL)" in said[0]
    finally:
        sup.stop(timeout=5)
