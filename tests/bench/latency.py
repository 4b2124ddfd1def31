"""Posting → `alert-raised` at a steady rate: the time from handing a missed posting to the
producer until its alert is on the `alert-raised` topic (read by the bench itself)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.events import ALERT_RAISED
from tests.bench import workload
from tests.bench.report import Row
from tests.bench.stack import Bench, drain, wait_until
from tests.bench.workload import Posting
from tests.support import repayment_event

TICK = 0.01
# After the last send, alerts are awaited while they keep coming: a slow worker's latency is
# measured, not cut off (a stall this long ends the wait; the unseen are counted).
STALLED_AFTER = 60.0


async def measure(bench: Bench) -> None:
    sizes = bench.sizes
    total = int(sizes.rate * sizes.steady_seconds)
    planned = await _first_misses(bench, bench.take(total))
    sent_at: dict[str, float] = {}
    raised_at: dict[str, float] = {}
    alerts = await _alert_reader(bench.bootstrap)
    reader = asyncio.create_task(_read(alerts, sent_at, raised_at))
    try:
        deliveries = []
        started = time.monotonic()
        sent = 0
        while sent < total:
            due = min(total, int((time.monotonic() - started) * sizes.rate) + 1)
            batch = planned[sent:due]
            now = time.monotonic()
            for posting in batch:
                if posting.missed:
                    sent_at[posting.event_id] = now
            deliveries += await bench.post(batch)
            sent = due
            await asyncio.sleep(TICK)
        sending = time.monotonic() - started
        await asyncio.gather(*deliveries)
        behind = {c: bench.posted - await bench.applied(c) for c in ("scheduler", "alerts")}
        bench.report.note(
            f"{total} postings in {sending:.1f}s ({total / sending:.0f}/s), "
            f"{len(sent_at)} missed; not yet applied when the last was sent: {behind}"
        )
        seen, moved_at = 0, time.monotonic()
        while len(raised_at) < len(sent_at) and time.monotonic() - moved_at < STALLED_AFTER:
            bench.check_alive()
            if len(raised_at) != seen:
                seen, moved_at = len(raised_at), time.monotonic()
            await asyncio.sleep(0.2)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await alerts.stop()
    _report(bench, sent_at, raised_at)
    bench.report.note(f"after the steady run: {await drain(bench, 600.0)}")


async def _first_misses(bench: Bench, planned: list[Posting]) -> list[Posting]:
    """The planned postings with every missed one moved to a loan of its own that has
    missed nothing yet. The alerts desk keeps one open alert per loan and family, so a
    second miss on a loan already in arrears is counted on its alert, not raised anew: what
    is timed here is the first miss of a loan, which is what raises `alert-raised`. The
    fresh loans are imported first, and their facts awaited in the alerts service."""
    missed = sum(posting.missed for posting in planned)
    fresh = workload.loan_ids(f"LAT{bench.next_installment}", missed)
    await workload.import_loans(bench.scheduler, fresh)

    async def projected() -> int:
        count: int = await bench.db.fetchval(
            "SELECT count(*) FROM alerts.loan_facts WHERE loan_id = ANY($1::varchar[])", fresh
        )
        return count

    count, _ = await wait_until(projected, len(fresh), stalled_after=STALLED_AFTER)
    if count < len(fresh):
        raise RuntimeError(f"alerts knows {count} of {len(fresh)} fresh loans")
    firsts = iter(fresh)
    moved = []
    for posting in planned:
        if posting.missed:
            event = repayment_event(
                next(firsts),
                status="missed",
                days_past_due=bench.sizes.missed_days_past_due,
                installment_no=1,
            )
            posting = Posting(event["event_id"], event["loan_id"], True, json.dumps(event).encode())
        moved.append(posting)
    return moved


def _report(bench: Bench, sent_at: dict[str, float], raised_at: dict[str, float]) -> None:
    latencies = sorted((raised_at[e] - sent_at[e]) * 1000 for e in raised_at)
    bench.report.note(f"alert-raised seen for {len(latencies)} of {len(sent_at)} missed postings")
    if len(latencies) < 2:
        return
    cuts = statistics.quantiles(latencies, n=100)
    bench.report.add(Row("posting -> alert-raised p50", cuts[49], "ms"))
    bench.report.add(Row("posting -> alert-raised p95", cuts[94], "ms", 500.0, True))
    bench.report.add(Row("posting -> alert-raised p99", cuts[98], "ms"))


async def _alert_reader(bootstrap: str) -> AIOKafkaConsumer:
    """A reader of every partition of alert-raised, from its current end (no group: no
    join to wait for)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        # The instrument must not add its own wait: the embedded broker holds an empty
        # fetch for the whole wait even when records arrive (shared/kafka.py).
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    await consumer.topics()
    partitions = [
        TopicPartition(ALERT_RAISED, p) for p in consumer.partitions_for_topic(ALERT_RAISED) or ()
    ]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for partition in partitions:
        await consumer.position(partition)
    return consumer


async def _read(
    consumer: AIOKafkaConsumer, sent_at: dict[str, float], raised_at: dict[str, float]
) -> None:
    while True:
        batch = await consumer.getmany(timeout_ms=100)
        now = time.monotonic()
        for records in batch.values():
            for record in records:
                source = json.loads(record.value or b"{}").get("source_event_id")
                if source in sent_at and source not in raised_at:
                    raised_at[source] = now
