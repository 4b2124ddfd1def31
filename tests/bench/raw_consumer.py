"""The raw baseline: what the broker and PostgreSQL allow with no framework in between.

`python -m tests.bench.raw_consumer BOOTSTRAP DSN TOPIC GROUP`: an aiokafka consumer of its
own group decodes each posting, writes every batch with one asyncpg `executemany`
`INSERT ... ON CONFLICT DO NOTHING` in one transaction, and commits the offsets after the
database commit, as the workers do. Runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid

import asyncpg
from aiokafka import AIOKafkaConsumer

TABLE = "bench.raw_postings"
CREATE = f"""
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE IF NOT EXISTS {TABLE} (
    event_id uuid PRIMARY KEY,
    loan_id text NOT NULL,
    installment_no int NOT NULL,
    status text NOT NULL,
    days_past_due int NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
INSERT = (
    f"INSERT INTO {TABLE} (event_id, loan_id, installment_no, status, days_past_due)"
    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
)
MAX_BATCH = 1_000


async def consume(bootstrap: str, dsn: str, topic: str, group: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    conn = await asyncpg.connect(dsn)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=MAX_BATCH)
            rows = []
            for records in batch.values():
                for record in records:
                    event = json.loads(record.value or b"{}")
                    rows.append(
                        (
                            uuid.UUID(event["event_id"]),
                            event["loan_id"],
                            event["installment_no"],
                            event["status"],
                            event["days_past_due"],
                        )
                    )
            if not rows:
                continue
            async with conn.transaction():
                await conn.executemany(INSERT, rows)
            await consumer.commit()
    finally:
        await consumer.stop()
        await conn.close()


if __name__ == "__main__":
    asyncio.run(consume(*sys.argv[1:5]))
