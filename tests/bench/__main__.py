"""`make bench` (`python -m tests.bench`), `make bench-soak` (`python -m tests.bench soak`) and
`make bench-visits` (`python -m tests.bench visits`: only the visit capture phase)."""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx

from shared import devstack
from tests.bench import (
    importing,
    latency,
    pure,
    replanning,
    soak,
    throughput,
    visits,
    workload,
)
from tests.bench.config import Sizes
from tests.bench.processes import Processes, processes
from tests.bench.raw_consumer import CREATE as CREATE_RAW_TABLE
from tests.bench.report import Report
from tests.bench.stack import RAW_TOPIC, Bench, drain

# The processes the phases need: loans and tasks (scheduler API), visit capture (visits API,
# which asks the scheduler), and the two consumers of repayment-posted.
SERVICE_PROCESSES = ("scheduler-api", "visits-api", "scheduler-worker", "alerts-worker")
APIS = ("scheduler", "visits")
# A portfolio file is far larger than the 64 MiB a `make run` import allows.
MAX_IMPORT_BYTES = str(4 * 1024**3)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench")
    parser.add_argument("mode", nargs="?", choices=["all", "soak", "visits"], default="all")
    args = parser.parse_args()
    # Line by line also into a file or pipe: a long run shows where it is.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    sizes = Sizes.from_env()
    if args.mode == "soak" and sizes.soak == 0:
        sizes = Sizes.from_env() if "BENCH_SOAK" in os.environ else _with_soak(1_000_000)
    logging.basicConfig(level=logging.CRITICAL)  # the clients' chatter is not the figures
    signal.signal(signal.SIGTERM, _interrupt)
    cores, load = os.cpu_count(), os.getloadavg()
    report = Report()
    print(f"sizes: {sizes}", flush=True)
    if args.mode == "all":
        print("pure domain logic (one core):", flush=True)
        pure.measure(report)
    root = devstack.ROOT / ".data"
    root.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=root))
    keep = os.environ.get("BENCH_KEEP") == "1"
    interrupted = False
    try:
        _run(work, sizes, report, args.mode)
    except KeyboardInterrupt:
        print("\ninterrupted; every process the bench started is stopped", flush=True)
        keep = interrupted = True
    finally:
        print(f"\n{report.table()}\n\nmemory per process (MiB, resident/peak):")
        print(report.memory_table())
        loads = " ".join(f"{x:.2f}" for x in load)
        print(f"\nmachine: {cores} cores, load average (1, 5, 15 min) at start {loads}")
        if keep:
            print(f"logs and data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if interrupted:
        sys.exit(130)


def _with_soak(n: int) -> Sizes:
    os.environ["BENCH_SOAK"] = str(n)
    return Sizes.from_env()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(work: Path, sizes: Sizes, report: Report, mode: str) -> None:
    (work / "logs").mkdir()
    with devstack.embedded_postgres(work / "pg") as database_url:
        for service in devstack.SERVICES:
            devstack.migrate(database_url, service)
        ports = {service: devstack.free_port() for service in devstack.SERVICES}
        stack = devstack.Stack(database_url, "", ports)
        with processes(work / "logs", {}) as procs:
            port = devstack.free_port()
            broker = procs.adopt("broker", devstack.start_broker(port))
            devstack.wait_for_port(port, give_up=lambda: not broker.alive())
            stack.bootstrap = f"127.0.0.1:{port}"
            asyncio.run(devstack.create_topics(stack.bootstrap))
            asyncio.run(_create_raw(stack.bootstrap, database_url))
            # The dev JWT secret's warning on every token would fill the logs (as `make bench`
            # silences it for itself).
            stack.env_extra = {
                "MAX_IMPORT_BYTES": MAX_IMPORT_BYTES,
                "PYTHONWARNINGS": "ignore::UserWarning",
                # The bench's dozen agents capture at the pace of thousands (visits.py).
                "VISIT_CAPTURES_PER_MINUTE": str(visits.CAPTURE_LIMIT),
            }
            procs.env = stack.env()
            commands = stack.commands()
            for name in SERVICE_PROCESSES:
                procs.start(name, commands[name])
            for service in APIS:
                devstack.wait_for_port(ports[service], timeout=60)
            urls = {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}
            asyncio.run(_phases(sizes, report, procs, database_url, stack.bootstrap, urls, mode))


async def _create_raw(bootstrap: str, database_url: str) -> None:
    """The raw consumer's table, and its twin of repayment-posted."""
    await devstack.create_topics(bootstrap)
    from shared.topics_admin import ensure_topics

    await ensure_topics(bootstrap, [RAW_TOPIC])
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await conn.execute(CREATE_RAW_TABLE)
    finally:
        await conn.close()


async def _phases(
    sizes: Sizes,
    report: Report,
    procs: Processes,
    database_url: str,
    bootstrap: str,
    urls: dict[str, str],
    mode: str,
) -> None:
    # A pool: the workers' counts are polled concurrently.
    db = await asyncpg.create_pool(database_url.replace("+asyncpg", ""), min_size=1, max_size=4)
    kafka = workload.producer(bootstrap)
    await kafka.start()
    scheduler = httpx.AsyncClient(base_url=urls["scheduler"], timeout=None)
    bench = Bench(sizes, report, procs, database_url, bootstrap, urls, db, kafka, scheduler)
    try:
        await _set_up(bench)
        steps: list[tuple[str, Callable[[Bench], Awaitable[None]]]] = [
            ("throughput: raw consumer, then both workers", throughput.measure),
            ("latency: posting -> alert-raised at a steady rate", latency.measure),
            ("visit capture through the visits API", visits.measure),
            ("import through POST /v1/loans/import", importing.measure),
            ("replan: the daily re-plan of the portfolio (BENCH_REPLAN)", replanning.measure),
        ]
        if mode == "soak":
            steps = []
        elif mode == "visits":
            steps = [steps[2]]
        # BENCH_ONLY=throughput (a phase's first word): one phase, for a quick comparison.
        if only := os.environ.get("BENCH_ONLY"):
            steps = [step for step in steps if step[0].split(":")[0].split()[0] == only]
        if sizes.soak:
            steps.append((f"soak: {sizes.soak:,} postings through both workers", soak.run))
        for title, step in steps:
            await _phase(bench, title, step)
    finally:
        await scheduler.aclose()
        await kafka.stop()
        await db.close()


async def _set_up(bench: Bench) -> None:
    print("\nset-up:", flush=True)
    bench.sample_memory("start")
    started = time.monotonic()
    bench.agents = await workload.register_agents(bench.scheduler)
    bench.loans = workload.loan_ids("BEN", bench.sizes.loans)
    outcome = await workload.import_loans(bench.scheduler, bench.loans)
    bench.report.note(
        f"{len(bench.agents)} agents, {len(bench.loans)} loans registered in "
        f"{time.monotonic() - started:.1f}s{' (in chunks)' if outcome.chunked else ''}"
    )
    await throughput.warm_up_workers(bench)
    bench.sample_memory("set-up")


async def _phase(bench: Bench, title: str, step: Callable[[Bench], Awaitable[None]]) -> None:
    print(f"\n{title}:", flush=True)
    started = time.monotonic()
    try:
        await step(bench)
    except Exception as exc:  # noqa: BLE001 - one phase failing must not hide the others
        traceback.print_exc()
        bench.report.note(f"{title} FAILED: {type(exc).__name__}: {exc}")
    bench.report.note(f"({time.monotonic() - started:.0f}s)")
    bench.sample_memory(title.split(":")[0].split(" ")[0])
    if dead := bench.procs.dead():
        bench.report.note(f"exited during the phase: {', '.join(dead)}")
    elif title.startswith("throughput"):
        bench.report.note(f"after the burst: {await drain(bench, 600.0)}")


if __name__ == "__main__":
    main()
