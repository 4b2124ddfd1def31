"""The consumer loop's own cost, side by side with a raw consumer (not a test; no assertion).

`.venv/bin/python -m tests.bench_consumer [EVENTS [ROUNDS]]` starts an embedded PostgreSQL and
broker of its own, posts EVENTS `repayment-posted` events (default 20,000) and lets two
consumer groups apply them, each into a table of its own, one after the other, ROUNDS times
(default 3):

- raw: aiokafka `getmany` → `json.loads` → asyncpg `executemany … ON CONFLICT DO NOTHING`, one
  transaction and one offset commit a batch: the floor any worker pays;
- plumbing: `shared.kafka.EventConsumer` (validation against the model, inbox claim, split on
  failure, one commit for the topic's partitions) with a trivial set-based handler, one
  multi-row insert.

Each rate is measured from the first record a consumer sees to the commit of the last, so the
group join is not counted. Prints events/s and the ratio of plumbing to raw.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer
from sqlalchemy import Column, MetaData, String, Table, Uuid, insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared import devstack
from shared.consumer_defaults import DEFAULT_BATCH_SIZE
from shared.db import make_engine, make_session_factory, schema_metadata
from shared.events import REPAYMENT_POSTED, RepaymentPosted
from shared.inbox import inbox_table
from shared.kafka import EventConsumer, TopicHandler, make_producer

SCHEMA = "bench_consumer"
metadata: MetaData = schema_metadata(SCHEMA)
inbox = inbox_table(metadata)
effects = Table(
    "effects",
    metadata,
    Column("event_id", Uuid, primary_key=True),
    Column("loan_id", String(64), nullable=False),
)
raw_effects = Table(
    "raw_effects",
    metadata,
    Column("event_id", Uuid, primary_key=True),
    Column("loan_id", String(64), nullable=False),
)
LOANS = 5_000


@dataclass
class Stopwatch:
    """Wall time and this process's CPU time from the first record to the last: on a shared
    machine the CPU a consumer spends per event is steadier than its wall-clock rate."""

    wall: float = 0.0
    cpu: float = 0.0

    def start(self) -> None:
        if not self.wall:
            self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, n: int) -> tuple[float, float]:
        """Events per second and CPU microseconds per event."""
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return n / wall, cpu / n * 1e6


async def post(bootstrap: str, n: int) -> None:
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        sent = []
        for i in range(n):
            event = RepaymentPosted(
                loan_id=f"L-{i % LOANS}",
                installment_no=1 + i // LOANS,
                due_date=date(2026, 11, 1),
                amount_due="2800.00",
                amount_paid="2800.00" if i % 5 else "0.00",
                status="paid" if i % 5 else "missed",
                days_past_due=0 if i % 5 else 35,
                outstanding_principal="70000.00",
            )
            sent.append(
                await producer.send(
                    REPAYMENT_POSTED, event.model_dump_json().encode(), key=event.loan_id.encode()
                )
            )
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def raw(bootstrap: str, database_url: str, n: int) -> tuple[float, float]:
    consumer = AIOKafkaConsumer(
        REPAYMENT_POSTED,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    sql = (
        f'INSERT INTO "{SCHEMA}".raw_effects (event_id, loan_id) VALUES ($1, $2) '
        "ON CONFLICT DO NOTHING"
    )
    await consumer.start()
    try:
        done, watch = 0, Stopwatch()
        while done < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=DEFAULT_BATCH_SIZE)
            if not batch:
                continue
            watch.start()
            rows = []
            for records in batch.values():
                for record in records:
                    event = json.loads(record.value or b"")
                    rows.append((uuid.UUID(event["event_id"]), event["loan_id"]))
            async with conn.transaction():
                await conn.executemany(sql, rows)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
            done += len(rows)
        return watch.stop(n)
    finally:
        await consumer.stop()
        await conn.close()


async def plumbing(bootstrap: str, database_url: str, n: int) -> tuple[float, float]:
    engine = make_engine(database_url)
    watch, applied = Stopwatch(), 0
    all_applied = asyncio.Event()

    async def apply(session: AsyncSession, events: Sequence[RepaymentPosted]) -> None:
        nonlocal applied
        watch.start()
        await session.execute(
            insert(effects), [{"event_id": e.event_id, "loan_id": e.loan_id} for e in events]
        )
        applied += len(events)
        if applied >= n:
            all_applied.set()

    producer = make_producer(bootstrap)
    await producer.start()
    consumer = EventConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"plumbing-{uuid.uuid4().hex[:8]}",
        handlers={REPAYMENT_POSTED: TopicHandler(RepaymentPosted, apply)},
        sessions=make_session_factory(engine),
        inbox_table=inbox,
        producer=producer,
    )
    task = asyncio.create_task(consumer.run())
    try:
        # The last batch is applied (its commit follows within milliseconds).
        await all_applied.wait()
        rate = watch.stop(n)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await engine.dispose()
    return rate


async def prepare(database_url: str) -> None:
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
        await conn.execute(text(f'CREATE SCHEMA "{SCHEMA}"'))
        await conn.run_sync(metadata.create_all)
    await engine.dispose()


async def measure(database_url: str, bootstrap: str, n: int, rounds: int) -> None:
    """Alternate the two consumers `rounds` times (the machine is shared: one run is noise),
    each round a new group over the same events into emptied tables; report the medians."""
    await devstack.create_topics(bootstrap)
    await prepare(database_url)
    await post(bootstrap, n)
    rates: dict[str, list[float]] = {"raw": [], "plumbing": []}
    cpu: dict[str, list[float]] = {"raw": [], "plumbing": []}
    for round_no in range(1, rounds + 1):
        for name, consume in (("raw", raw), ("plumbing", plumbing)):
            await empty(database_url)
            rate, cpu_us = await consume(bootstrap, database_url, n)
            rates[name].append(rate)
            cpu[name].append(cpu_us)
            print(f"  round {round_no} {name:9s} {rate:8.0f} events/s  {cpu_us:6.1f} us CPU/event")
    raw_rate, plumbing_rate = (statistics.median(rates[k]) for k in ("raw", "plumbing"))
    raw_cpu, plumbing_cpu = (statistics.median(cpu[k]) for k in ("raw", "plumbing"))
    print(f"{n} repayment-posted events, batches of {DEFAULT_BATCH_SIZE}, median of {rounds}:")
    for name, rate, cpu_us in (
        ("raw aiokafka -> asyncpg executemany", raw_rate, raw_cpu),
        ("EventConsumer, multi-row insert", plumbing_rate, plumbing_cpu),
    ):
        print(f"  {name:37s} {rate:8.0f} events/s {cpu_us:6.1f} us CPU/event")
    print(f"  {'ratio plumbing / raw':37s} {plumbing_rate / raw_rate:8.2f}")


async def empty(database_url: str) -> None:
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await conn.execute(f'TRUNCATE "{SCHEMA}".effects, "{SCHEMA}".raw_effects, "{SCHEMA}".inbox')
        await conn.execute(f'VACUUM ANALYZE "{SCHEMA}".inbox')
    finally:
        await conn.close()


def main() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    root = Path(__file__).resolve().parent.parent / ".data"
    root.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-consumer-", dir=root))
    try:
        with (
            devstack.embedded_postgres(work / "pg") as database_url,
            devstack.embedded_broker(devstack.free_port()) as bootstrap,
        ):
            asyncio.run(measure(database_url, bootstrap, n, rounds))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
