"""Per-agent rate limits on capture and upload: a token bucket per (caller, route class).

Each caller gets `per_minute` tokens of burst, refilled at `per_minute / 60` a second; a
request takes one, and a caller with none left gets a 429 problem+json with `Retry-After`
(whole seconds until the next token). A phone draining an offline queue therefore sends
a minute's worth at once and then keeps pace with the refill, honouring Retry-After.

The buckets live in the API process. With N replicas behind a load balancer a caller may
get up to N times the limit. That is acceptable for what the limit is for: keeping one
broken or looping app (or a stolen token) from crowding out the other agents of a process
and from filling the visits tables; it is not a quota anyone is billed by, and the request
size limits and database timeouts still bound each request. An exact, fleet-wide limit
would keep the buckets in shared storage (a Redis `INCR`/`EXPIRE` window, or a PostgreSQL
row per caller updated with the request) at the price of a round trip per request.

Memory is bounded: at most `max_callers` buckets are kept, least recently used dropped
first (a dropped caller starts again with a full bucket, which only ever errs generous).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import Problem

# Far more agents than one lender has; a bucket is a few dozen bytes.
MAX_CALLERS = 100_000


@dataclass
class _Bucket:
    tokens: float
    refilled_at: float


class RateLimiter:
    """Token buckets of one route class (`captures`, `uploads`), one per caller."""

    def __init__(
        self,
        route_class: str,
        per_minute: int,
        *,
        max_callers: int = MAX_CALLERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.route_class = route_class
        self.capacity = float(per_minute)
        self.per_second = per_minute / 60.0
        self._max_callers = max_callers
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def wait_seconds(self, caller: str) -> float:
        """Take a token for `caller`: 0 when it had one, else how long until it will."""
        now = self._clock()
        bucket = self._buckets.pop(caller, None) or _Bucket(self.capacity, now)
        bucket.tokens = min(
            self.capacity, bucket.tokens + (now - bucket.refilled_at) * self.per_second
        )
        bucket.refilled_at = now
        self._buckets[caller] = bucket  # most recently used last
        while len(self._buckets) > self._max_callers:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.per_second

    def check(self, caller: str) -> None:
        """A 429 problem+json with Retry-After when `caller` has no token left."""
        wait = self.wait_seconds(caller)
        if wait > 0:
            raise Problem(
                429,
                "Too Many Requests",
                f"more {self.route_class} than {self.capacity:g} a minute; retry later",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
