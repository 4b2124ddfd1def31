"""A stuck test ends the run with a diagnosis instead of holding CI until its own limit.

Every test (setup, call and teardown) gets a deadline: TEST_DEADLINE_SECONDS, 240 s by
default, where the slowest test takes about a minute on two cores. Past it, the stacks of
the event loop's tasks (where an async test waits) and of every thread are printed, and
the run exits non-zero."""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import threading
import time
from collections.abc import Iterator

import pytest

DEADLINE_SECONDS = float(os.environ.get("TEST_DEADLINE_SECONDS", "240"))
EXIT_CODE = 3

_loop: asyncio.AbstractEventLoop | None = None


@pytest.fixture(scope="session", autouse=True)
async def _watched_loop() -> None:
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
    time.sleep(0.5)
    os._exit(EXIT_CODE)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    timer = threading.Timer(DEADLINE_SECONDS, _stuck, args=(item,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
