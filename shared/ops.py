"""Operator commands for repairing event flow: `python -m shared.ops <command>`.

- `republish --service visits|alerts --since <ISO time>`: the service's outbox rows published
  since then are marked unpublished, so its relay sends them again, in their original order,
  one relay at a time. For when the broker lost records (readiness and the workers' ERROR
  lines say so, and from when). Consumers deduplicate on `event_id`: re-sending is safe.
- `replay-dlq --topic <topic> --group <consumer group>`: re-produces to `<topic>` the dead
  letters that group wrote, once their cause is fixed. Only records whose payload and key were
  kept whole are replayed (`shared.dead_letters`); the others are counted and left. Every
  group consuming the topic sees a replayed record again; those that applied it ignore it.
- `ack-loss --service <service>`: marks the service's reported broker losses as dealt with,
  which turns its readiness green again.

They read DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS like the services do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select, update

from shared import dead_letters
from shared.db import make_engine, make_session_factory, schema_metadata, unit_of_work
from shared.events import EVENT_MODELS, dlq_topic
from shared.health import health_tables
from shared.kafka import make_producer
from shared.outbox import outbox_table
from shared.settings import ServiceSettings

# Each service owns the schema of its name (design.md); these publish through an outbox.
SERVICES = ("scheduler", "visits", "alerts")
OUTBOX_SERVICES = ("visits", "alerts")


@dataclass(frozen=True)
class Republished:
    requeued: int
    still_pending: int  # rows of the batch the relay had not sent when we stopped waiting


async def republish(
    database_url: str, service: str, since: datetime, *, wait_seconds: float = 60.0
) -> Republished:
    """Mark `service`'s outbox rows published at or after `since` unpublished, then wait
    (up to `wait_seconds`) for its relay to have sent them again."""
    outbox = outbox_table(schema_metadata(service))
    engine = make_engine(database_url)
    try:
        sessions = make_session_factory(engine)
        async with unit_of_work(sessions) as session:
            # One statement: the relay publishes unpublished rows in id order, so the old
            # rows go out again before anything newer, and one relay at a time.
            result = await session.execute(
                update(outbox)
                .where(outbox.c.published_at >= since)
                .values(published_at=None)
                .returning(outbox.c.id)
            )
            ids = list(result.scalars())
        if not ids:
            return Republished(0, 0)
        last = max(ids)
        pending_stmt = (
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.published_at.is_(None), outbox.c.id <= last)
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            async with sessions() as session:
                pending = int((await session.execute(pending_stmt)).scalar_one())
            if pending == 0 or loop.time() >= deadline:
                return Republished(len(ids), pending)
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()


@dataclass
class Replayed:
    replayed: int = 0
    not_whole: int = 0  # payload or key truncated: evidence only
    duplicates: int = 0  # the same source record dead-lettered more than once
    other_groups: int = 0
    unreadable: int = 0
    sources: list[tuple[str, int, int]] = field(default_factory=list)


async def replay_dead_letters(
    bootstrap: str,
    topic: str,
    group: str,
    *,
    since: datetime | None = None,
    dry_run: bool = False,
) -> Replayed:
    """Re-produce `group`'s whole dead letters of `topic` (failed at or after `since`) to
    `topic`, each source record once, in source partition and offset order."""
    found: dict[tuple[str, int, int], dead_letters.Replayable] = {}
    outcome = Replayed()
    for record in await read_records(bootstrap, dlq_topic(topic)):
        if not isinstance(record, dict) or record.get("source_topic") != topic:
            outcome.unreadable += 1
            continue
        if record.get("consumer_group") != group:
            outcome.other_groups += 1
            continue
        if since is not None and _failed_before(record, since):
            continue
        original = dead_letters.replayable(record)
        if original is None:
            outcome.not_whole += 1
        elif original.source in found:
            outcome.duplicates += 1
        else:
            found[original.source] = original
    ordered = [found[source] for source in sorted(found)]
    outcome.sources = [r.source for r in ordered]
    if dry_run or not ordered:
        return outcome
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        futures = [await producer.send(r.topic, value=r.value, key=r.key) for r in ordered]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    outcome.replayed = len(ordered)
    return outcome


async def acknowledge_losses(database_url: str, service: str) -> list[dict[str, Any]]:
    """Mark the service's open broker losses acknowledged; returns what they were."""
    losses = health_tables(schema_metadata(service)).losses
    engine = make_engine(database_url)
    try:
        async with unit_of_work(make_session_factory(engine)) as session:
            rows = await session.execute(
                update(losses)
                .where(losses.c.acknowledged_at.is_(None))
                .values(acknowledged_at=func.now())
                .returning(losses.c.role, losses.c.topic, losses.c.partition, losses.c.lost_since)
            )
            return [dict(row._mapping) for row in rows]
    finally:
        await engine.dispose()


async def read_records(bootstrap: str, topic: str) -> list[Any]:
    """Every JSON record of `topic` from its start to its current end (others as None)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        idle_polls = 0
        # Read until every partition reached its end and a poll brings nothing more (the
        # embedded broker can report an end below the last batch's records), or until ten
        # polls in a row bring nothing (a partition whose last records retention removed).
        while idle_polls < 10:
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            if batch:
                idle_polls = 0
                for items in batch.values():
                    records.extend(_json(r.value) for r in items)
                continue
            idle_polls += 1
            positions = [await consumer.position(tp) for tp in partitions]
            if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                break
        return records
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    if topic not in await consumer.topics():
        return set()
    return set(consumer.partitions_for_topic(topic) or ())


def _json(value: bytes | None) -> Any:
    try:
        return json.loads(value or b"")
    except ValueError:
        return None


def _failed_before(record: dict[str, Any], since: datetime) -> bool:
    try:
        return datetime.fromisoformat(str(record.get("failed_at"))) < since
    except ValueError:
        return False


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset; give one, e.g. 2026-11-30T10:00:00+08:00"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.ops", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    rep = commands.add_parser("republish", help="send a service's outbox again from a time")
    rep.add_argument("--service", required=True, choices=OUTBOX_SERVICES)
    rep.add_argument("--since", required=True, type=_aware, help="ISO 8601 time with offset")
    rep.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the relay")
    dlq = commands.add_parser("replay-dlq", help="re-produce a group's whole dead letters")
    dlq.add_argument("--topic", required=True, choices=sorted(EVENT_MODELS))
    dlq.add_argument("--group", required=True, help="the consumer group that dead-lettered")
    dlq.add_argument("--since", type=_aware, help="only dead letters from this time on")
    dlq.add_argument("--dry-run", action="store_true", help="count, produce nothing")
    ack = commands.add_parser("ack-loss", help="acknowledge a service's broker losses")
    ack.add_argument("--service", required=True, choices=SERVICES)
    return parser


async def _run(args: argparse.Namespace, settings: ServiceSettings) -> int:
    if args.command == "republish":
        result = await republish(
            settings.database_url, args.service, args.since, wait_seconds=args.wait
        )
        print(
            f"{result.requeued} {args.service} outbox rows published since "
            f"{args.since.isoformat()} queued for the relay again"
        )
        if result.still_pending:
            print(
                f"{result.still_pending} of them are not sent yet: is "
                f"`python -m services.{args.service}.worker` running? They go out when it is."
            )
            return 2
        if result.requeued:
            print("all of them sent again")
        return 0
    if args.command == "replay-dlq":
        replay = await replay_dead_letters(
            settings.kafka_bootstrap_servers,
            args.topic,
            args.group,
            since=args.since,
            dry_run=args.dry_run,
        )
        verb = "would replay" if args.dry_run else "replayed"
        print(
            f"{verb} {len(replay.sources)} dead letters of group {args.group} to {args.topic}; "
            f"left {replay.not_whole} not kept whole, {replay.duplicates} duplicates, "
            f"{replay.other_groups} of other groups, {replay.unreadable} unreadable"
        )
        return 0
    acknowledged = await acknowledge_losses(settings.database_url, args.service)
    for loss in acknowledged:
        print(
            f"acknowledged: {loss['role']} {loss['topic']}/{loss['partition']} "
            f"lost since {loss['lost_since'].isoformat()}"
        )
    print(f"{len(acknowledged)} broker losses of {args.service} acknowledged")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(_run(args, ServiceSettings()))


if __name__ == "__main__":
    sys.exit(main())
