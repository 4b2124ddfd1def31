"""The running system the phases measure, and the SQL reads they poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from shared.events import REPAYMENT_POSTED
from tests.bench import workload
from tests.bench.config import Sizes
from tests.bench.processes import Processes
from tests.bench.raw_consumer import TABLE as RAW_TABLE
from tests.bench.report import Report
from tests.bench.workload import Posting

CONSUMERS = ("scheduler", "alerts")
WORKERS = {consumer: f"{consumer}-worker" for consumer in CONSUMERS}
# The raw consumer reads a twin of repayment-posted (same partitions, same bytes), so the
# workers sit idle while it is measured and it sits idle while they are.
RAW_TOPIC = "bench-repayment-posted"
POLL_SECONDS = 0.05


@dataclass
class Bench:
    sizes: Sizes
    report: Report
    procs: Processes
    database_url: str
    bootstrap: str
    urls: dict[str, str]
    db: asyncpg.Pool
    kafka: AIOKafkaProducer
    scheduler: httpx.AsyncClient
    loans: list[str] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    next_installment: int = 1
    # Postings sent to repayment-posted so far, which every worker must apply.
    posted: int = 0

    def take(self, count: int) -> list[Posting]:
        """The next `count` postings over the bench's loans (later installments each time)."""
        return list(self.postings(count))

    def postings(self, count: int) -> Iterator[Posting]:
        first = self.next_installment
        self.next_installment += workload.rounds(count, len(self.loans))
        return workload.postings(
            self.loans,
            count,
            first_installment=first,
            missed_share=self.sizes.missed_share,
            dpd=self.sizes.missed_days_past_due,
        )

    async def post(self, batch: list[Posting]) -> list[asyncio.Future[object]]:
        self.posted += len(batch)
        return await workload.send(self.kafka, REPAYMENT_POSTED, batch)

    async def applied(self, consumer: str) -> int:
        """Postings in the consumer's inbox (its other topics not counted)."""
        count: int = await self.db.fetchval(
            f"SELECT count(*) FROM {consumer}.inbox WHERE topic = $1", REPAYMENT_POSTED
        )
        return count

    async def raw_applied(self) -> int:
        count: int = await self.db.fetchval(f"SELECT count(*) FROM {RAW_TABLE}")
        return count

    def sample_memory(self, checkpoint: str) -> None:
        self.report.memory[checkpoint] = {
            name: memory
            for name, proc in self.procs.running.items()
            if (memory := proc.memory()) is not None
        }

    def check_alive(self) -> None:
        if dead := self.procs.dead():
            raise RuntimeError(f"process(es) exited: {', '.join(dead)}; see their logs")


async def wait_until(
    probe: Callable[[], Awaitable[int]],
    target: int,
    *,
    stalled_after: float,
    check: Callable[[], None] = lambda: None,
) -> tuple[int, float]:
    """Poll `probe` until it reaches `target` or stops moving for `stalled_after` seconds;
    its last value and when it was read (monotonic)."""
    last, moved_at = -1, time.monotonic()
    while True:
        value = await probe()
        now = time.monotonic()
        if value >= target:
            return value, now
        if value != last:
            last, moved_at = value, now
        elif now - moved_at > stalled_after:
            return value, now
        check()
        await asyncio.sleep(POLL_SECONDS)


async def drain(bench: Bench, within: float) -> str:
    """Until every worker applied every posting sent (bounded); says how it went."""
    started = time.monotonic()
    deadline = started + within
    while time.monotonic() < deadline:
        counts = {c: await bench.applied(c) for c in CONSUMERS}
        if all(n >= bench.posted for n in counts.values()):
            return f"drained in {time.monotonic() - started:.1f}s"
        bench.check_alive()
        await asyncio.sleep(0.5)
    return f"NOT drained within {within:.0f}s: {counts} of {bench.posted}"
