"""Transactional outbox: an event is a row written in the same transaction as the state
change it announces; a relay publishes unpublished rows to Kafka and marks them sent.

Delivery is at-least-once (a crash between send and mark re-sends); consumers dedupe on
`event_id` through their inbox, so that is harmless.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    Uuid,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import unit_of_work
from shared.events import EventEnvelope

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


class OutboxRelay:
    """Publishes outbox rows in id order, a batch per transaction."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Table,
        producer: AIOKafkaProducer,
        *,
        batch_size: int = 200,
        idle_seconds: float = 0.2,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._producer = producer
        self._batch_size = batch_size
        self._idle_seconds = idle_seconds
        # Published rows are kept a while for audit and replays, then purged.
        self._retention = retention

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
            futures = [
                await self._producer.send(
                    row.topic,
                    value=_json_bytes(row.payload),
                    key=row.message_key.encode(),
                )
                for row in rows
            ]
            await asyncio.gather(*futures)
            await session.execute(
                update(ob)
                .where(ob.c.id.in_([row.id for row in rows]))
                .values(published_at=datetime.now(UTC))
            )
        return len(rows)

    async def purge_published(self) -> int:
        """Delete rows published longer ago than the retention; returns how many."""
        ob = self._outbox
        cutoff = datetime.now(UTC) - self._retention
        async with unit_of_work(self._sessions) as session:
            result = await session.execute(
                delete(ob).where(ob.c.published_at.is_not(None), ob.c.published_at < cutoff)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def run(self) -> None:
        backoff = self._idle_seconds
        next_purge = 0.0
        loop = asyncio.get_running_loop()
        while True:
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
