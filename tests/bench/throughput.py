"""Throughput side by side: the raw consumer alone, each worker alone, then both workers
together on the same kind of postings.

Fair on a 2-core machine: each path gets the machine without the other's load. The raw
consumer reads a twin topic while the workers have nothing to do; then a burst of the same
size and shape goes to `repayment-posted` while the other worker is frozen (SIGSTOP: it
takes no CPU, and catches up once resumed, before the next measurement), so each worker's
ratio to raw compares like with like. Finally both workers consume one burst together, as
they are deployed; that figure is printed for what it is, two consumers sharing two cores
with PostgreSQL and the broker.
Each clock starts at the first send and stops when the path's table holds every posting.
The CPU seconds of each consumer process say what its events cost apart from contention
(the PostgreSQL backends' CPU is not in them).
"""

from __future__ import annotations

import asyncio
import sys
import time

from tests.bench import workload
from tests.bench.processes import Proc
from tests.bench.report import Row
from tests.bench.stack import CONSUMERS, RAW_TOPIC, WORKERS, Bench, drain, wait_until

WARM_UP = 30  # postings that make sure a consumer has joined and owns every partition
JOIN_WITHIN = 180.0
STALLED_AFTER = 120.0


async def start_raw(bench: Bench) -> Proc:
    dsn = bench.database_url.replace("+asyncpg", "")
    raw = bench.procs.start(
        "raw-consumer",
        [
            sys.executable,
            "-m",
            "tests.bench.raw_consumer",
            bench.bootstrap,
            dsn,
            RAW_TOPIC,
            "bench-raw",
        ],
    )
    await workload.send_and_confirm(bench.kafka, RAW_TOPIC, bench.take(WARM_UP))
    count, _ = await wait_until(bench.raw_applied, WARM_UP, stalled_after=JOIN_WITHIN)
    if count < WARM_UP:
        raise RuntimeError("the raw consumer did not start consuming; see raw-consumer.log")
    return raw


async def warm_up_workers(bench: Bench) -> None:
    await asyncio.gather(*await bench.post(bench.take(WARM_UP)))
    outcome = await drain(bench, JOIN_WITHIN)
    if not outcome.startswith("drained"):
        raise RuntimeError(f"workers did not start consuming: {outcome}")


async def measure(bench: Bench) -> None:
    n = bench.sizes.burst
    burst = bench.take(n)
    bench.report.note(
        f"each path alone: the raw consumer on {RAW_TOPIC} (a twin topic) while the workers "
        f"idle, then {n} postings on repayment-posted to each worker while the other is frozen, "
        "then to both together, as deployed; each clock runs from the first send until the "
        "path's table holds them all"
    )
    raw = await start_raw(bench)
    before = await bench.raw_applied()
    cpu = raw.cpu_seconds()
    started = time.monotonic()
    deliveries = await workload.send(bench.kafka, RAW_TOPIC, burst)

    async def raw_new() -> int:
        return await bench.raw_applied() - before

    count, ended = await wait_until(raw_new, n, stalled_after=STALLED_AFTER)
    await asyncio.gather(*deliveries)
    raw_rate = count / (ended - started)
    raw_cpu = raw.cpu_seconds() - cpu
    bench.sample_memory("raw burst")
    bench.procs.stop("raw-consumer")
    bench.report.add(Row("raw consumer", raw_rate, "events/s"))
    bench.report.note(f"raw: {count} of {n} in {ended - started:.2f}s, {raw_cpu:.2f} CPU s")

    raw_per_cpu = n / raw_cpu if raw_cpu > 0 else 0.0
    for consumer in CONSUMERS:
        others = [bench.procs[WORKERS[c]] for c in CONSUMERS if c != consumer]
        for proc in others:
            proc.pause()
        try:
            await _workers(bench, bench.take(n), raw_rate, raw_per_cpu, (consumer,), "alone")
        finally:
            for proc in others:
                proc.resume()
        outcome = await drain(bench, JOIN_WITHIN)
        bench.report.note(f"after {consumer} alone, the others caught up: {outcome}")
    await _workers(bench, burst, raw_rate, raw_per_cpu, CONSUMERS, "both running")


async def _workers(
    bench: Bench,
    burst: list[workload.Posting],
    raw_rate: float,
    raw_per_cpu: float,
    consumers: tuple[str, ...],
    how: str,
) -> None:
    n = len(burst)
    procs = {c: bench.procs[WORKERS[c]] for c in consumers}
    before = {c: await bench.applied(c) for c in consumers}
    cpu = {c: procs[c].cpu_seconds() for c in consumers}
    started = time.monotonic()
    deliveries = await bench.post(burst)

    async def one(consumer: str) -> None:
        async def new() -> int:
            return await bench.applied(consumer) - before[consumer]

        count, ended = await wait_until(
            new,
            n,
            stalled_after=STALLED_AFTER,
            check=bench.check_alive,
        )
        used = procs[consumer].cpu_seconds() - cpu[consumer]
        rate = count / (ended - started)
        # The target is each worker's own rate; together they share the cores.
        target = 0.5 if how == "alone" else None
        bench.report.add(Row(f"{consumer} worker ({how})", rate, "events/s"))
        bench.report.add(Row(f"{consumer} worker ({how}) / raw", rate / raw_rate, "x raw", target))
        per_cpu = count / used if used > 0 else 0.0
        bench.report.note(
            f"{consumer} ({how}): {count} of {n} in {ended - started:.2f}s, {used:.2f} CPU s "
            f"({per_cpu:,.0f} events per CPU s; raw {raw_per_cpu:,.0f})"
        )

    async with asyncio.TaskGroup() as group:
        for consumer in consumers:
            group.create_task(one(consumer))
    await asyncio.gather(*deliveries)
