"""The memory soak: a long run of postings through both workers, their memory sampled
every so many applied postings, so a leak shows as a climbing column."""

from __future__ import annotations

import asyncio
import time

from tests.bench.processes import Memory
from tests.bench.report import Row
from tests.bench.stack import CONSUMERS, WORKERS, Bench

PIECE = 5_000  # postings handed to the producer before waiting for their acknowledgements
STALLED_AFTER = 300.0


async def run(bench: Bench) -> None:
    n, every = bench.sizes.soak, bench.sizes.soak_every
    before = {c: await bench.applied(c) for c in CONSUMERS}
    marks = dict.fromkeys(CONSUMERS, every)
    samples: dict[str, list[Memory]] = {c: [] for c in CONSUMERS}
    started = time.monotonic()
    producing = asyncio.create_task(_produce(bench, n))
    header = ("worker", "applied", "s", "rss MiB", "peak MiB", "broker rss")
    print("  {:18s} {:>10s} {:>7s} {:>8s} {:>9s} {:>11s}".format(*header))
    last, moved_at = dict(before), time.monotonic()
    try:
        while any(marks[c] <= n for c in CONSUMERS):
            await asyncio.sleep(1.0)
            if producing.done():
                producing.result()  # the broker refused: say why
            bench.check_alive()
            counts = {c: await bench.applied(c) for c in CONSUMERS}
            for c in CONSUMERS:
                while marks[c] <= n and counts[c] - before[c] >= marks[c]:
                    samples[c].append(_sample(bench, c, marks[c], time.monotonic() - started))
                    marks[c] += every
            if counts != last:
                last, moved_at = counts, time.monotonic()
            elif time.monotonic() - moved_at > STALLED_AFTER:
                bench.report.note(
                    f"soak stalled: nothing applied for {STALLED_AFTER:.0f}s at {counts}"
                )
                break
    finally:
        producing.cancel()
    elapsed = time.monotonic() - started
    done = {c: last[c] - before[c] for c in CONSUMERS}
    bench.report.note(f"soak: {done} of {n} postings applied in {elapsed:.0f}s")
    for c, memories in samples.items():
        if len(memories) >= 2:
            # From the first sample on: start-up and the first batches' growth is not a leak.
            growth = memories[-1].rss_mib - memories[0].rss_mib
            bench.report.add(Row(f"{WORKERS[c]} RSS growth over soak", growth, "MiB"))
            bench.report.add(Row(f"{WORKERS[c]} peak RSS in soak", memories[-1].peak_mib, "MiB"))


def _sample(bench: Bench, consumer: str, applied: int, seconds: float) -> Memory:
    worker = bench.procs[WORKERS[consumer]].memory() or Memory(0, 0)
    broker = bench.procs["broker"].memory() or Memory(0, 0)
    print(
        f"  {WORKERS[consumer]:18s} {applied:>10,d} {seconds:7.0f} {worker.rss_mib:8.0f} "
        f"{worker.peak_mib:9.0f} {broker.rss_mib:11.0f}",
        flush=True,
    )
    return worker


async def _produce(bench: Bench, n: int) -> None:
    batch = []
    for posting in bench.postings(n):
        batch.append(posting)
        if len(batch) == PIECE:
            await asyncio.gather(*await bench.post(batch))
            batch = []
    if batch:
        await asyncio.gather(*await bench.post(batch))
