"""Running a worker coroutine until SIGTERM/SIGINT, then letting it stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any


async def run_until_stopped(main: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    # Cancelling unwinds the consumer: uncommitted offsets are redelivered, which the
    # inbox makes harmless.
    with contextlib.suppress(asyncio.CancelledError):
        await task
