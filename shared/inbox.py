"""Consumer inbox: the `event_id`s a service has applied, written in the same transaction
as the effect, so a redelivered event is recognised and changes nothing."""

from __future__ import annotations

import uuid

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
