"""Transactional outbox: an event is a row written in the same transaction as the state
change it announces; a relay publishes unpublished rows to Kafka and marks them sent.

Delivery is at-least-once (a crash between send and mark re-sends); consumers dedupe on
`event_id` through their inbox, so that is harmless.

A row marked published is only as safe as the broker that acknowledged it: a broker that loses
its log (the embedded one keeps topics in memory) loses those events too. The relay notices:
the broker acknowledges a partition below an offset it acknowledged before
(`shared.broker_ledger`), or no longer holds the last record it acknowledged there
(`shared.broker_probe`, on the health tick). It logs an ERROR saying what to run and reports
it through readiness; `python -m shared.ops republish` then marks the rows unpublished again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.broker_ledger import BrokerLedger, Loss, fingerprint, relay_role
from shared.broker_probe import LogProbe
from shared.db import unit_of_work
from shared.events import EventEnvelope
from shared.health import WorkerHealth
from shared.topics_admin import TopicKeeper

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 600.0


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", Uuid, nullable=False, unique=True),
        Column("topic", String(128), nullable=False),
        Column("message_key", String(64), nullable=False),
        Column("payload", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Index("ix_outbox_unpublished", "id", postgresql_where="published_at IS NULL"),
    )


async def enqueue(session: AsyncSession, outbox: Table, event: EventEnvelope) -> None:
    """Stage an event in the caller's transaction; it is published only if that commits."""
    await session.execute(
        insert(outbox).values(
            event_id=event.event_id,
            topic=event.event_type,
            message_key=event.loan_id,
            payload=event.model_dump(mode="json"),
        )
    )


async def enqueue_many(
    session: AsyncSession, outbox: Table, events: Sequence[EventEnvelope]
) -> None:
    """Stage many events in the caller's transaction with one statement, in their order.

    The rows travel as one array per column (`unnest`): four bind parameters however many
    events, so no batch meets the driver's limit of 32,767 parameters."""
    if not events:
        return
    rows = func.unnest(
        bindparam("event_ids", [e.event_id for e in events], type_=ARRAY(Uuid)),
        bindparam("topics", [e.event_type for e in events], type_=ARRAY(Text)),
        bindparam("keys", [e.loan_id for e in events], type_=ARRAY(Text)),
        bindparam("payloads", [e.model_dump_json() for e in events], type_=ARRAY(Text)),
    ).table_valued("event_id", "topic", "message_key", "payload", with_ordinality="n")
    rows = rows.render_derived(name="staged")
    await session.execute(
        insert(outbox).from_select(
            ["event_id", "topic", "message_key", "payload"],
            select(
                rows.c.event_id, rows.c.topic, rows.c.message_key, cast(rows.c.payload, JSONB)
            ).order_by(rows.c.n),
        )
    )


class OutboxRelay:
    """Publishes outbox rows in id order, a batch per transaction.

    With `bootstrap_servers` it also runs a health tick: topics as designed and (with
    `health`) a heartbeat. Every acknowledgement is checked against the earlier ones.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Table,
        producer: AIOKafkaProducer,
        *,
        batch_size: int = 200,
        # An idle relay looks for new rows this often: part of every event's latency.
        idle_seconds: float = 0.05,
        retention: timedelta = timedelta(days=7),
        bootstrap_servers: str | None = None,
        health: WorkerHealth | None = None,
        tick_seconds: float = 5.0,
        broker_timeout_seconds: float = 5.0,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._producer = producer
        self._batch_size = batch_size
        self._idle_seconds = idle_seconds
        # Published rows are kept a while for audit and replays, then purged.
        self._retention = retention
        self._bootstrap = bootstrap_servers
        self._health = health
        self._tick_seconds = tick_seconds
        self._broker_timeout = broker_timeout_seconds
        self.role = relay_role(outbox.fullname)
        self.ledger = BrokerLedger(self.role, "relay")
        self._marks_loaded = health is None
        self._published = 0
        self._last_publish_at: datetime | None = None
        self._topics = TopicKeeper(bootstrap_servers) if bootstrap_servers else None
        self._probe = LogProbe(bootstrap_servers or "")

    async def publish_batch(self) -> int:
        """Publish one batch; returns how many rows were sent."""
        ob = self._outbox
        async with unit_of_work(self._sessions) as session:
            # One publisher at a time per outbox: two replicas sending interleaved batches
            # would break the per-loan order consumers rely on. The others stand by.
            leader = await session.execute(
                select(func.pg_try_advisory_xact_lock(func.hashtext(ob.fullname)))
            )
            if not leader.scalar_one():
                return 0
            rows = (
                await session.execute(
                    select(ob.c.id, ob.c.topic, ob.c.message_key, ob.c.payload)
                    .where(ob.c.published_at.is_(None))
                    .order_by(ob.c.id)
                    .limit(self._batch_size)
                )
            ).all()
            if not rows:
                return 0
            # Send the whole batch, then wait: the producer keeps per-partition order.
            messages = [(row.message_key.encode(), _json_bytes(row.payload)) for row in rows]
            futures = [
                await self._producer.send(row.topic, value=value, key=key)
                for row, (key, value) in zip(rows, messages, strict=True)
            ]
            acknowledged: list[RecordMetadata] = await asyncio.gather(*futures)
            self._check_acknowledged(acknowledged, messages)
            await session.execute(
                update(ob)
                .where(ob.c.id.in_([row.id for row in rows]))
                .values(published_at=datetime.now(UTC))
            )
        self._published += len(rows)
        self._last_publish_at = datetime.now(UTC)
        return len(rows)

    def _check_acknowledged(
        self, acknowledged: list[RecordMetadata], messages: list[tuple[bytes, bytes]]
    ) -> None:
        """Offsets only grow: an acknowledgement below one we had means the log was lost.
        Each partition's mark keeps the fingerprint of its last record, to read it back."""
        now = datetime.now(UTC)
        for md, (key, value) in zip(acknowledged, messages, strict=True):
            loss = self.ledger.check(md.topic, md.partition, md.offset)
            if loss is not None:
                self._report(loss)
            self.ledger.advance(md.topic, md.partition, md.offset + 1, now, fingerprint(key, value))

    def _report(self, loss: Loss) -> None:
        if self._health is not None:
            self._health.report(loss)
        else:
            log.error("%s. To repair: %s", loss.describe(), loss.remedy(None))

    async def purge_published(self) -> int:
        """Delete rows published longer ago than the retention; returns how many."""
        ob = self._outbox
        cutoff = datetime.now(UTC) - self._retention
        async with unit_of_work(self._sessions) as session:
            result = await session.execute(
                delete(ob).where(ob.c.published_at.is_not(None), ob.c.published_at < cutoff)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def tick(self) -> None:
        """Topics as designed, the records it published still on the broker, and the
        heartbeat. Failures are reported, never raised."""
        if self._topics is None:
            return
        if not self._marks_loaded and self._health is not None:
            # What earlier runs saw acknowledged, so a loss while we were down shows too.
            try:
                self.ledger.merge(await self._health.load_marks())
                self._marks_loaded = True
            except Exception as exc:  # noqa: BLE001 - the next tick tries again
                log.warning("could not load the %s positions: %s", self.role, type(exc).__name__)
        broker = "ok"
        try:
            async with asyncio.timeout(self._broker_timeout):
                await self._topics.ensure()
                for loss in await self._probe.verify(self.ledger):
                    self._report(loss)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported in the heartbeat
            broker = f"unreachable: {type(exc).__name__}"
        if self._health is None:
            return
        try:
            await self._health.beat(
                {
                    "kind": "relay",
                    "outbox": self._outbox.fullname,
                    "broker": broker,
                    "backlog": await self._backlog(),
                    "published": self._published,
                    "last_publish_at": (
                        self._last_publish_at.isoformat() if self._last_publish_at else None
                    ),
                },
                self.ledger,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the next tick tries again
            log.warning("could not save the %s heartbeat: %s", self.role, type(exc).__name__)

    async def _backlog(self) -> int:
        ob = self._outbox
        async with self._sessions() as session:
            stmt = select(func.count()).select_from(ob).where(ob.c.published_at.is_(None))
            return int((await session.execute(stmt)).scalar_one())

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            await self._probe.close()

    async def _run(self) -> None:
        backoff = self._idle_seconds
        next_purge = 0.0
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            if loop.time() >= next_tick:
                await self.tick()
                next_tick = loop.time() + self._tick_seconds
            try:
                if loop.time() >= next_purge:
                    purged = await self.purge_published()
                    if purged:
                        log.info("purged %d published outbox rows", purged)
                    next_purge = loop.time() + PURGE_EVERY_SECONDS
                sent = await self.publish_batch()
                backoff = self._idle_seconds
            except asyncio.CancelledError:
                raise
            except Exception:
                # Broker or database down: the rows stay unpublished and are retried.
                log.exception("outbox publish failed; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if sent < self._batch_size:
                await asyncio.sleep(self._idle_seconds)


def _json_bytes(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
