"""A stuck test ends the run with a diagnosis instead of holding CI until its own limit.

Every test (setup, call and teardown) gets a deadline: TEST_DEADLINE_SECONDS, 240 s by
default, where the slowest test takes under 20 s on two cores. Past it, the stacks of the
event loop's tasks (where an async test waits) and of every thread are printed, the run's
broker and PostgreSQL are killed, and the run exits with code 3.

A pytest plugin (`-p tests.watchdog`); the suite's conftest imports its hook and fixture."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DEADLINE_SECONDS = float(os.environ.get("TEST_DEADLINE_SECONDS", "240"))
EXIT_CODE = 3

_loop: asyncio.AbstractEventLoop | None = None
# Data folders of the PostgreSQL servers the session started (they run detached).
_databases: list[Path] = []


def own_database(data_dir: Path) -> None:
    """A PostgreSQL data folder to stop with the run if a test is stuck."""
    _databases.append(data_dir)


def _postmaster(data_dir: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    return None


@pytest.fixture(scope="session", autouse=True)
async def watched_loop() -> None:
    """The session's event loop, whose tasks are printed when a test is stuck."""
    global _loop
    _loop = asyncio.get_running_loop()


def _dump_tasks(done: threading.Event) -> None:
    try:
        for task in asyncio.all_tasks():
            print(f"\n--- task {task.get_name()}: {task.get_coro()!r}", file=sys.stderr)
            task.print_stack(file=sys.stderr)
    finally:
        done.set()


def _stuck(item: pytest.Item) -> None:
    nodeid = item.nodeid
    # Output capture would swallow the diagnosis along with the process.
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=False)
    print(
        f"\n!!! {nodeid} still running after {DEADLINE_SECONDS:.0f}s; stacks follow",
        file=sys.stderr,
        flush=True,
    )
    if _loop is not None and _loop.is_running():
        dumped = threading.Event()
        _loop.call_soon_threadsafe(_dump_tasks, dumped)
        # The loop may itself be blocked in a synchronous call: the thread dump shows where.
        dumped.wait(10)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    # The embedded broker and PostgreSQL would outlive an exit that runs no teardown.
    for pid in [*_descendants(os.getpid()), *map(_postmaster, _databases)]:
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    os._exit(EXIT_CODE)


def _descendants(root: int) -> list[int]:
    """Every process below `root`, from /proc (Linux, where the suite runs)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with (
                contextlib.suppress(OSError, IndexError, ValueError),
                open(f"/proc/{entry}/stat", encoding="utf-8") as stat,
            ):
                # pid (comm) state ppid ...; comm may hold spaces, so split after it.
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    timer = threading.Timer(DEADLINE_SECONDS, _stuck, args=(item,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
