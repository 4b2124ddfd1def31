"""Consumer inbox: the `event_id`s a service has applied, written in the same transaction
as the effect, so a redelivered event is recognised and changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import (
    Column,
    DateTime,
    Executable,
    MetaData,
    String,
    Table,
    Uuid,
    bindparam,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("event_id", Uuid, primary_key=True),
        Column("topic", String(128), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


async def claim_batch(
    session: AsyncSession, inbox: Table, event_ids: Iterable[uuid.UUID], topic: str
) -> set[uuid.UUID]:
    """Record a batch of events as applied in one statement; returns the ids that were not
    applied before (the fresh ones). The ids travel as one array parameter, so the statement
    is the same (compiled and prepared once) whatever the batch's size. They are inserted in
    sorted order (PostgreSQL sorts them), so two transactions claiming overlapping batches
    wait on each other instead of deadlocking."""
    ids = list(set(event_ids))
    if not ids:
        return set()
    result = await session.execute(_claim_statement(inbox), {"event_ids": ids, "topic": topic})
    return set(result.scalars())


def _claim_statement(inbox: Table) -> Executable:
    event_id = func.unnest(bindparam("event_ids", type_=ARRAY(Uuid))).label("event_id")
    rows = select(event_id, bindparam("topic", type_=String)).order_by(event_id)
    return (
        insert(inbox)
        .from_select(["event_id", "topic"], rows)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(inbox.c.event_id)
    )
