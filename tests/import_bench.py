"""The loan import at portfolio size: `python -m tests.import_bench [LOANS]`.

Starts an embedded PostgreSQL of its own (no broker, no workers: in production they are other
processes), runs the scheduler API in-process and streams one NDJSON body of LOANS new loans
(default 100,000) to `POST /v1/loans/import`, then imports the same body again. Prints loans/s,
seconds, and this process's RSS before, at its peak while importing, and after: the body is
made as it is sent, so any growth is the import's. Not a test: timings are noisy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.scheduler import main as scheduler_main
from services.scheduler.settings import SchedulerSettings
from shared import devstack
from tests.support import CORE_BANKING, fetchval, loan_body, new_id

TARGET_SECONDS = 30.0
LINES_PER_PART = 500


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * 4096 / 2**20


@dataclass
class Figures:
    loans: int
    seconds: float
    rss_before: float
    rss_peak: float
    rss_after: float

    def line(self, label: str) -> str:
        return (
            f"{label:10s} {self.loans:8d} loans {self.seconds:7.1f} s"
            f" {self.loans / self.seconds:9.0f} loans/s   RSS MiB before {self.rss_before:6.1f}"
            f" peak {self.rss_peak:6.1f} after {self.rss_after:6.1f}"
        )


def portfolio(template: bytes, prefix: str, loans: int) -> Iterator[bytes]:
    """NDJSON of `loans` loans in parts of LINES_PER_PART lines, made as it is read."""
    part: list[bytes] = []
    for n in range(loans):
        part.append(template.replace(b"LOANID", f"{prefix}-{n}".encode()))
        if len(part) == LINES_PER_PART:
            yield b"\n".join(part) + b"\n"
            part = []
    if part:
        yield b"\n".join(part) + b"\n"


async def streamed(parts: Iterator[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def import_once(
    client: httpx.AsyncClient, template: bytes, prefix: str, loans: int
) -> Figures:
    peak = before = rss_mib()

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_mib())
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    response = await client.post(
        "/v1/loans/import",
        content=streamed(portfolio(template, prefix, loans)),
        headers={**CORE_BANKING, "content-type": "application/x-ndjson"},
        timeout=3600,
    )
    seconds = time.perf_counter() - started
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    response.raise_for_status()
    result = response.json()
    assert result["accepted"] == loans and result["rejected"] == 0, result
    return Figures(loans, seconds, before, max(peak, rss_mib()), rss_mib())


async def run(database_url: str, loans: int) -> None:
    settings = SchedulerSettings(env="test", database_url=database_url)
    app = scheduler_main.build_app(settings)
    prefix = new_id("IMP")
    template = json.dumps({"loan_id": "LOANID", **loan_body(region=prefix)}).encode()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://scheduler"
        ) as client,
    ):
        first = await import_once(client, template, prefix, loans)
        print(first.line("import"))
        again = await import_once(client, template, prefix, loans)
        print(again.line("re-import"))
    outbox = await fetchval(
        database_url,
        "SELECT count(*) FROM scheduler.outbox WHERE message_key LIKE $1",
        f"{prefix}-%",
    )
    verdict = "meets" if first.seconds < TARGET_SECONDS else "MISSES"
    print(f"target < {TARGET_SECONDS:.0f} s for the import: {verdict}; outbox rows {outbox}")


def main() -> None:
    loans = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    logging.disable(logging.INFO)
    root = Path(__file__).resolve().parent.parent / ".data"
    root.mkdir(exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="import-bench-", dir=root)) / "pg"
    try:
        with devstack.embedded_postgres(data_dir) as database_url:
            devstack.migrate(database_url, "scheduler")
            asyncio.run(run(database_url, loans))
    finally:
        shutil.rmtree(data_dir.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
