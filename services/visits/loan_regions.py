"""The regions of the loans this API process captures on, as the scheduler told them,
refreshed behind the captures rather than in front of them.

A capture keeps its loan's region (supervisors read by it), asked of the scheduler and
cached by the service client for `HTTP_CACHE_SECONDS`. When that ran out, the capture that
found it so waited for the scheduler: a few captures a second on a busy API, each the
slowest of its second (the bench's p99). Here a region younger than `fresh_seconds` (or
the earlier point below) is used as it is; one older, but younger than twice that, is used
too, while one refresh per loan runs in the background; only an older one (or none) is
asked for in front of the capture. So a capture's region is never older than
`2 * fresh_seconds` (60 s by default), as it was never older than `fresh_seconds` before,
and a loan captured on steadily never waits. A loan the scheduler does not know is not
remembered: it is asked about each time.

The refreshes are spread out: a region is refreshed once older than a point drawn for it
between half and all of `fresh_seconds` (never later than before), and at most
`MAX_REFRESHING` refreshes run at once; a loan whose refresh cannot start yet keeps its
region (within the same limit) until a later capture of it starts one. Without this, the
loans an API process learnt together (its first minute, or the bench's warm-up) went
stale together, and their refreshes came as one burst of scheduler calls, their responses
handled in the captures' event loop at once, beside the captures.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from shared.lru import BoundedLru
from shared.service_client import OwnerUnavailable

log = logging.getLogger(__name__)

# Loans; an entry is a hundred bytes or so.
MAX_LOANS = 100_000
# Refreshes behind the captures in flight at once: a few scheduler calls at a time.
MAX_REFRESHING = 4
# A region is refreshed once older than `fresh_seconds * (1 - SPREAD * draw)`, a draw in
# [0, 1) per fetch: between half and all of the freshness.
SPREAD = 0.5

Lookup = Callable[[str], Awaitable[str | None]]


class LoanRegions:
    def __init__(
        self,
        fresh_seconds: float,
        *,
        max_loans: int = MAX_LOANS,
        max_refreshing: int = MAX_REFRESHING,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] = random.random,
    ) -> None:
        """`draw`: a number in [0, 1) per fetch, where in the spread its refresh falls."""
        self._fresh = fresh_seconds
        self._max_refreshing = max_refreshing
        self._clock = clock
        self._draw = draw
        # loan -> (region, fetched at, refreshed once this old)
        self._known: BoundedLru[str, tuple[str, float, float]] = BoundedLru(max_loans)
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    async def region(self, loan_id: str, lookup: Lookup) -> str | None:
        """The loan's region (None: the scheduler does not know the loan). `lookup` asks
        the scheduler; its errors (scheduler unavailable) reach the caller only when no
        usable region is known."""
        now = self._clock()
        known = self._known.get(loan_id)
        if known is not None:
            kept, fetched_at, refresh_after = known
            age = now - fetched_at
            if age < refresh_after:
                return kept
            if age < 2 * self._fresh:
                self._refresh_behind(loan_id, lookup)
                return kept
        region = await lookup(loan_id)
        self._remember(loan_id, region, now)
        return region

    def _remember(self, loan_id: str, region: str | None, fetched_at: float) -> None:
        if region is None:
            self._known.discard(loan_id)
            return
        refresh_after = self._fresh * (1 - SPREAD * self._draw())
        self._known.put(loan_id, (region, fetched_at, refresh_after))

    def _refresh_behind(self, loan_id: str, lookup: Lookup) -> None:
        if loan_id in self._refreshing or len(self._refreshing) >= self._max_refreshing:
            return

        async def refresh() -> None:
            started = self._clock()
            try:
                self._remember(loan_id, await lookup(loan_id), started)
            except OwnerUnavailable as exc:  # the next capture past the limit asks in front
                log.warning("refreshing the region of loan %s failed: %s", loan_id, exc)
            finally:
                self._refreshing.pop(loan_id, None)

        self._refreshing[loan_id] = asyncio.get_running_loop().create_task(refresh())

    @property
    def refreshing(self) -> int:
        """Refreshes in flight behind the captures."""
        return len(self._refreshing)

    async def close(self) -> None:
        """Cancel the refreshes in flight (at shutdown, before the client closes)."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
