"""Consumer inbox: the `event_id`s a service has applied, written in the same transaction
as the effect, so a redelivered event is recognised and changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import Column, DateTime, MetaData, String, Table, Uuid, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("event_id", Uuid, primary_key=True),
        Column("topic", String(128), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


async def claim(session: AsyncSession, inbox: Table, event_id: uuid.UUID, topic: str) -> bool:
    """Record the event as applied; False when it already was (a redelivery).

    A concurrent claim of the same id blocks on the primary key until the first
    transaction ends, so two workers can never both apply one event.
    """
    result = await session.execute(
        insert(inbox)
        .values(event_id=event_id, topic=topic)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(inbox.c.event_id)
    )
    return result.first() is not None


async def claim_batch(
    session: AsyncSession, inbox: Table, event_ids: Iterable[uuid.UUID], topic: str
) -> set[uuid.UUID]:
    """Record a batch of events as applied in one statement; returns the ids that were not
    applied before (the fresh ones). Ids are inserted in sorted order, so two transactions
    claiming overlapping batches wait on each other instead of deadlocking."""
    ids = sorted(set(event_ids))
    if not ids:
        return set()
    result = await session.execute(
        insert(inbox)
        .values([{"event_id": event_id, "topic": topic} for event_id in ids])
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(inbox.c.event_id)
    )
    return set(result.scalars())
