"""What the fault suite reads afterwards: the tables (read-only SQL), the dead-letter topics,
the workers' logs and the APIs' readiness."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.events import ALL_TOPICS, dlq_topic

CONSUMERS = ("scheduler", "alerts")

# How a worker says it lost records (a broker restart empties the embedded broker): the ERROR
# of shared.health naming the topic and partition (not the Kafka client's "connection lost").
LOSS_IN_LOG = re.compile(r"the broker lost records of \S+ partition \d+")
CLIENT_LOGGERS = ("aiokafka", "asyncio", "sqlalchemy", "uvicorn")
# How /readyz says it: its broker_loss check failing (shared/health.py WorkerReadiness).
LOSS_IN_READINESS = re.compile(r'"broker_loss":\{"ok":false')
# A record sent to (or refused by) a dead-letter topic, or a batch summary that counts some;
# a summary's "0 dead-lettered" is none.
DEAD_LETTER_IN_LOG = re.compile(
    r"sent to dead-letter topic|dead letter of|could not dead-letter|\b[1-9]\d* dead-lettered",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Tables:
    """What the consumers did with the suite's postings, counted in their own tables."""

    applied: dict[str, int]  # postings in each consumer's inbox
    # The alerts desk keeps one active alert per loan and rule family: a loan's later misses
    # escalate or count on its alert instead of raising another. So every applied missed
    # posting must be remembered exactly once, and every loan with one must have an alert.
    missed_remembered: int  # rows of applied missed postings in the desk's memory
    missed_remembered_distinct: int
    loans_missed: int  # loans with an applied missed posting
    loans_missed_with_alert: int
    alerts_on_paid: int  # alerts on postings that were paid (must be none)
    duplicate_alerts: int  # alerts beyond one per posting
    open_task_clashes: int  # (loan, method) pairs with more than one open task
    alerts_unpublished: int  # alert-raised still waiting in the alerts outbox
    alerts_published: int
    alert_raised_applied: int  # alert-raised events in the scheduler's inbox


async def read_tables(database_url: str, postings: Iterable[str], missed: Iterable[str]) -> Tables:
    """Counts for the given posting ids (all, and the missed ones)."""
    every = [uuid.UUID(p) for p in postings]
    missed_ids = [uuid.UUID(p) for p in missed]
    paid = list(set(every) - set(missed_ids))
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        async with conn.transaction(readonly=True):
            applied = {
                consumer: await conn.fetchval(
                    f"SELECT count(*) FROM {consumer}.inbox WHERE event_id = ANY($1::uuid[])",
                    every,
                )
                for consumer in CONSUMERS
            }
            alerts = "SELECT {} FROM alerts.alerts WHERE source_event_id = ANY($1::uuid[])"
            memory = "SELECT {} FROM alerts.repayment_memory WHERE event_id = ANY($1::uuid[])"
            return Tables(
                applied=applied,
                missed_remembered=await conn.fetchval(memory.format("count(*)"), missed_ids),
                missed_remembered_distinct=await conn.fetchval(
                    memory.format("count(DISTINCT event_id)"), missed_ids
                ),
                loans_missed=await conn.fetchval(
                    memory.format("count(DISTINCT loan_id)"), missed_ids
                ),
                loans_missed_with_alert=await conn.fetchval(
                    "SELECT count(DISTINCT a.loan_id) FROM alerts.alerts AS a WHERE a.loan_id IN"
                    f" ({memory.format('loan_id')})",
                    missed_ids,
                ),
                alerts_on_paid=await conn.fetchval(alerts.format("count(*)"), paid),
                duplicate_alerts=await conn.fetchval(
                    alerts.format("count(*) - count(DISTINCT source_event_id)"), every
                ),
                open_task_clashes=await conn.fetchval(
                    "SELECT count(*) FROM (SELECT 1 FROM scheduler.visit_tasks"
                    " WHERE status = 'open' GROUP BY loan_id, method HAVING count(*) > 1) AS c"
                ),
                alerts_unpublished=await conn.fetchval(
                    "SELECT count(*) FROM alerts.outbox WHERE published_at IS NULL"
                ),
                alerts_published=await conn.fetchval(
                    "SELECT count(*) FROM alerts.outbox WHERE published_at IS NOT NULL"
                ),
                alert_raised_applied=await conn.fetchval(
                    "SELECT count(*) FROM scheduler.inbox WHERE topic = 'alert-raised'"
                ),
            )
    finally:
        await conn.close()


async def applied_counts(database_url: str, postings: list[uuid.UUID]) -> dict[str, int]:
    """Postings applied so far by each consumer (polled while draining)."""
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        return {
            consumer: await conn.fetchval(
                f"SELECT count(*) FROM {consumer}.inbox WHERE event_id = ANY($1::uuid[])",
                postings,
            )
            for consumer in CONSUMERS
        }
    finally:
        await conn.close()


async def applied_ids(database_url: str, consumer: str, postings: list[uuid.UUID]) -> set[str]:
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        rows = await conn.fetch(
            f"SELECT event_id FROM {consumer}.inbox WHERE event_id = ANY($1::uuid[])", postings
        )
    finally:
        await conn.close()
    return {str(row["event_id"]) for row in rows}


async def session_states(database_url: str) -> dict[str, int]:
    """The database's sessions by what they are doing: a member stopped mid-batch shows
    as `idle in transaction`, the members it holds up as waiting on a lock."""
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE state = 'idle in transaction') AS idle_in_transaction,"
            " count(*) FILTER (WHERE wait_event_type = 'Lock') AS waiting_on_lock"
            " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return dict(row)


async def open_transaction_idle(database_url: str, schema: str, seconds: float) -> bool:
    """Whether a session has sat idle in a transaction for `seconds`, its last statement
    a consumer's on `schema` (not the outbox relay reading or marking the outbox): a
    consumer stopped mid-batch. A running one never idles that long inside a batch."""
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND state = 'idle in transaction'"
            " AND state_change < clock_timestamp() - make_interval(secs => $1)"
            " AND query LIKE $2 AND query NOT LIKE $3 AND query NOT LIKE $4",
            seconds,
            f"%{schema}.%",
            f"%FROM {schema}.outbox%",
            f"UPDATE {schema}.outbox%",
        )
    finally:
        await conn.close()
    return bool(found)


async def dead_letters_on_broker(bootstrap: str) -> int:
    """Records on the dead-letter topics the broker has now (none created by asking)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        existing = await consumer.topics()
        partitions = [
            TopicPartition(topic, p)
            for topic in (dlq_topic(t) for t in ALL_TOPICS)
            if topic in existing
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        if not partitions:
            return 0
        first = await consumer.beginning_offsets(partitions)
        last = await consumer.end_offsets(partitions)
        return sum(last[tp] - first[tp] for tp in partitions)
    finally:
        await consumer.stop()


async def where_on_broker(
    bootstrap: str, topic: str, event_ids: set[str], *, within: float = 20.0
) -> dict[str, tuple[int, int]]:
    """Where each of `event_ids` stands on `topic` (partition, offset), reading the whole
    topic from its start; absent ids were never in the broker's log. Tells a posting the
    broker dropped from one a consumer skipped."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    found: dict[str, tuple[int, int]] = {}
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return found
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and len(found) < len(event_ids):
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            if not batch:
                break
            for records in batch.values():
                for record in records:
                    event_id = _event_id(record.value)
                    if event_id in event_ids:
                        found[event_id] = (record.partition, record.offset)
    finally:
        await consumer.stop()
    return found


def _event_id(value: bytes | None) -> str | None:
    try:
        event = json.loads(value or b"null")
    except ValueError:
        return None
    return str(event.get("event_id")) if isinstance(event, dict) else None


@dataclass(frozen=True)
class LogLine:
    process: str
    level: str
    message: str
    logger: str = ""


def log_lines(log_dir: Path, prefix: str = "") -> list[LogLine]:
    """The JSON log lines of every process whose log file name starts with `prefix`;
    anything else on stdout/stderr (a traceback printed before logging was set up) is
    kept as an ERROR line, so it is not missed."""
    lines: list[LogLine] = []
    for path in sorted(log_dir.glob(f"{prefix}*.log")):
        for raw in path.read_text(errors="replace").splitlines():
            if not raw.strip():
                continue
            try:
                entry: dict[str, Any] = json.loads(raw)
                lines.append(
                    LogLine(
                        path.stem,
                        str(entry["level"]),
                        str(entry["message"]),
                        str(entry.get("logger", "")),
                    )
                )
            except (ValueError, KeyError, TypeError):
                lines.append(LogLine(path.stem, "RAW", raw))
    return lines


def worker_lines(log_dir: Path) -> list[LogLine]:
    return [line for line in log_lines(log_dir) if "-worker" in line.process]


def dead_letters_logged(lines: list[LogLine]) -> int:
    return sum(1 for line in lines if DEAD_LETTER_IN_LOG.search(line.message))


def dead_letter_reasons(lines: list[LogLine], top: int = 3) -> list[str]:
    """The distinct reasons logged for dead letters, commonest first."""
    counted = Counter(
        f"{line.process}: {line.message[:200]}"
        for line in lines
        if DEAD_LETTER_IN_LOG.search(line.message)
    )
    return [f"{n} x {reason}" for reason, n in counted.most_common(top)]


def loss_in_logs(lines: list[LogLine]) -> list[LogLine]:
    return [
        line
        for line in lines
        if line.level in ("ERROR", "CRITICAL")
        and not line.logger.startswith(CLIENT_LOGGERS)
        and LOSS_IN_LOG.search(line.message)
    ]


def loss_in_readiness(answers: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    return [
        (status, body)
        for status, body in answers
        if status == 503 and LOSS_IN_READINESS.search(body)
    ]


def commonest_problems(lines: list[LogLine], top: int = 6) -> list[tuple[int, str]]:
    """The most frequent WARNING/ERROR messages (numbers masked so repeats group)."""
    counted = Counter(
        f"{line.process} {line.level}: " + re.sub(r"\d+", "N", line.message)[:160]
        for line in lines
        if line.level in ("WARNING", "ERROR", "CRITICAL", "RAW")
    )
    return [(n, text) for text, n in counted.most_common(top)]
