"""Sizes of the bench, from environment variables so a quick run can shrink them."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class Sizes:
    loans: int  # BENCH_LOANS: loans the postings are spread over
    burst: int  # BENCH_BURST: postings of the throughput burst
    rate: float  # BENCH_RATE: postings/s of the latency phase
    steady_seconds: float  # BENCH_SECONDS: how long the latency phase posts
    import_loans: int  # BENCH_IMPORT: loans in the one-body import
    capture_seconds: float  # BENCH_CAPTURE_SECONDS: how long wrk drives each endpoint
    capture_connections: int  # BENCH_CAPTURE_CONNECTIONS: wrk's concurrent connections
    soak: int  # BENCH_SOAK: postings of the memory soak (0: no soak)
    soak_every: int  # BENCH_SOAK_EVERY: applied postings between memory samples
    missed_share: float = 0.2
    missed_days_past_due: int = 35

    @classmethod
    def from_env(cls) -> Sizes:
        soak = _int("BENCH_SOAK", 0)
        return cls(
            loans=_int("BENCH_LOANS", 5_000),
            burst=_int("BENCH_BURST", 10_000),
            rate=_float("BENCH_RATE", 500.0),
            steady_seconds=_float("BENCH_SECONDS", 60.0),
            import_loans=_int("BENCH_IMPORT", 100_000),
            capture_seconds=_float("BENCH_CAPTURE_SECONDS", 20.0),
            capture_connections=_int("BENCH_CAPTURE_CONNECTIONS", 16),
            soak=soak,
            soak_every=_int("BENCH_SOAK_EVERY", max(1, min(100_000, soak // 10 or 1))),
        )
