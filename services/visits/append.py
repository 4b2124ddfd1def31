"""A capture's writes as one SQL statement: the visit, its entry in its loan's chain, its
`visit-completed` outbox row, and the removal of the draft it was submitted from.

One round trip instead of one per write and lock, which is most of what a capture costs
(tests/bench/visits.py measures it). The statement is built once; each capture only binds
its values. Its parts, as data-modifying CTEs that PostgreSQL runs once each:

- `inserted`: the visit, unless one of its unique keys is taken (a retry: nothing else
  is written, and the statement returns no row);
- `head`: the loan's chain head (`chain_heads`) upserted to the new entry. An existing
  head is locked and updated from its latest committed version, so captures of one loan
  at once are appended one after the other; the new entry's hash is computed there, from
  the previous one, in the canonical form of `chain.entry_hash` (checked by a unit test);
- `entry`, `event`, `draft`: the chain entry, the outbox row, the draft's removal.

A row locked by another capture of the same visit (a retry racing its original) is waited
for by the insert, which then finds the key taken; it waits holding no head lock.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg
from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    Table,
    Text,
    Uuid,
    bindparam,
    delete,
    exists,
    func,
    literal,
    select,
)
from sqlalchemy import (
    cast as sql_cast,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncSession

from services.visits import chain
from services.visits.models import ChainHead, Visit, VisitChainEntry, VisitDraft, outbox

VISITS = cast(Table, getattr(Visit, "__table__"))  # noqa: B009 - SQLModel leaves it untyped
HEADS = cast(Table, getattr(ChainHead, "__table__"))  # noqa: B009
ENTRIES = cast(Table, getattr(VisitChainEntry, "__table__"))  # noqa: B009
DRAFTS = cast(Table, getattr(VisitDraft, "__table__"))  # noqa: B009
ENTRY_COLUMNS = [
    *("visit_id", "loan_id", "seq", "prev_hash", "payload_hash", "entry_hash"),
    *("format", "chained_at"),
]
VISIT_COLUMNS = tuple(column.name for column in VISITS.columns)


def entry_hash_sql(
    seq: ColumnElement[Any], prev_hash: ColumnElement[Any], payload_hash: ColumnElement[Any]
) -> ColumnElement[str]:
    """`chain.entry_hash` in SQL: SHA-256 of `{"payload_hash":…,"prev_hash":…,"seq":…}`
    (sorted keys, no spaces; both hashes are hex, so nothing needs escaping)."""
    document = (
        literal('{"payload_hash":"', String)
        + payload_hash
        + literal('","prev_hash":"', String)
        + prev_hash
        + literal('","seq":', String)
        + sql_cast(seq, Text)
        + literal("}", String)
    )
    return func.encode(func.sha256(func.convert_to(document, "UTF8")), "hex")


def _statement() -> Any:
    inserted = (
        insert(VISITS)
        .values({name: bindparam(f"v_{name}") for name in VISIT_COLUMNS})
        .on_conflict_do_nothing()
        .returning(VISITS.c.visit_id, VISITS.c.loan_id)
        .cte("inserted")
    )
    payload_hash = bindparam("payload_hash", type_=String)
    first = select(
        inserted.c.loan_id,
        literal(1, Integer),
        bindparam("first_entry_hash", type_=String),
        literal(chain.GENESIS, String),
    ).select_from(inserted)
    head_upsert = insert(HEADS).from_select(["loan_id", "seq", "entry_hash", "prev_hash"], first)
    head = (
        head_upsert.on_conflict_do_update(
            index_elements=[HEADS.c.loan_id],
            set_={
                "seq": HEADS.c.seq + 1,
                "prev_hash": HEADS.c.entry_hash,
                "entry_hash": entry_hash_sql(HEADS.c.seq + 1, HEADS.c.entry_hash, payload_hash),
            },
        )
        .returning(HEADS.c.seq, HEADS.c.prev_hash, HEADS.c.entry_hash)
        .cte("head")
    )
    entry_row = select(
        bindparam("v_visit_id", type_=Uuid),
        bindparam("v_loan_id", type_=String),
        head.c.seq,
        head.c.prev_hash,
        payload_hash,
        head.c.entry_hash,
        bindparam("format", type_=Integer),
        bindparam("chained_at", type_=ENTRIES.c.chained_at.type),
    ).select_from(head)
    entry = (
        insert(ENTRIES)
        .from_select(
            ENTRY_COLUMNS,
            entry_row,
        )
        .returning(ENTRIES.c.seq)
        .cte("entry")
    )
    event_row = select(
        bindparam("event_id", type_=Uuid),
        bindparam("topic", type_=String),
        bindparam("v_loan_id", type_=String),
        bindparam("event_payload", type_=JSONB),
    ).select_from(inserted)
    event = (
        insert(outbox)
        .from_select(["event_id", "topic", "message_key", "payload"], event_row)
        .returning(outbox.c.id)
        .cte("event")
    )
    draft = (
        delete(DRAFTS)
        .where(
            DRAFTS.c.visit_id == bindparam("draft_id", type_=Uuid),
            DRAFTS.c.agent_id == bindparam("v_agent_id", type_=String),
            exists(select(inserted.c.visit_id)),
        )
        .returning(DRAFTS.c.visit_id)
        .cte("draft")
    )
    return select(
        head.c.seq,
        head.c.prev_hash,
        head.c.entry_hash,
        select(func.count()).select_from(entry).scalar_subquery(),
        select(func.count()).select_from(event).scalar_subquery(),
        select(func.count()).select_from(draft).scalar_subquery(),
    )


APPEND = _statement()


@dataclass(frozen=True)
class Appended:
    seq: int
    prev_hash: str
    entry_hash: str


async def append_visit(
    session: AsyncSession,
    visit: Mapping[str, Any],
    *,
    payload_hash: str,
    event: dict[str, Any] | JsonText,
    event_id: uuid.UUID,
    topic: str,
    chained_at: datetime,
    draft_id: uuid.UUID | None,
) -> Appended | None:
    """Run the capture's statement in the session's transaction: its chain entry, or None
    when one of the visit's unique keys was taken (nothing written). `visit`: the new
    row, every column (`VISIT_COLUMNS`)."""
    params = capture_params(
        visit,
        payload_hash=payload_hash,
        event=event,
        event_id=event_id,
        topic=topic,
        chained_at=chained_at,
        draft_id=draft_id,
    )
    if isinstance(event, JsonText):
        # Through SQLAlchemy, JSONB binds a document, which it serialises itself.
        params["event_payload"] = json.loads(event)
    connection = await session.connection()
    row = (await connection.execute(APPEND, params)).first()
    if row is None:
        return None
    return Appended(seq=row[0], prev_hash=row[1], entry_hash=row[2])


# The same statement for the capture path's own connection (`append_on_driver`): rendered
# once for asyncpg with its values' conversions (vocabulary words, JSON documents), so a
# capture spends nothing in SQLAlchemy's session, compiler cache or execution context,
# which were a fifth of its CPU. asyncpg prepares it once per connection (its statement
# cache, keyed by this text).
_COMPILED = APPEND.compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
APPEND_SQL = _COMPILED.string
_ORDER: tuple[str, ...] = tuple(_COMPILED.positiontup or ())
# The statement's own constants (`literal(...)`): bound like the capture's values.
_CONSTANTS = {name: value for name, value in _COMPILED.params.items() if value is not None}
_CONVERTERS: dict[str, Callable[[Any], Any]] = {}
for _name, _bind in _COMPILED.binds.items():
    _process = _bind.type.dialect_impl(_COMPILED.dialect).bind_processor(_COMPILED.dialect)
    if _process is not None:
        _CONVERTERS[_name] = _process


class JsonText(str):
    """A JSON document already serialised (by pydantic, in Rust), bound as it is rather
    than serialised again from a dict."""

    __slots__ = ()


def bound_values(params: dict[str, Any]) -> list[Any]:
    """The statement's positional values for `params` (as `append_visit` names them)."""
    values = _CONSTANTS | params
    for name, convert in _CONVERTERS.items():
        value = values[name]
        if not isinstance(value, JsonText):
            values[name] = convert(value)
    return [values[name] for name in _ORDER]


def capture_params(
    visit: Mapping[str, Any],
    *,
    payload_hash: str,
    event: dict[str, Any] | JsonText,
    event_id: uuid.UUID,
    topic: str,
    chained_at: datetime,
    draft_id: uuid.UUID | None,
) -> dict[str, Any]:
    params: dict[str, Any] = {f"v_{name}": visit[name] for name in VISIT_COLUMNS}
    params |= {
        "payload_hash": payload_hash,
        "first_entry_hash": chain.entry_hash(1, chain.GENESIS, payload_hash),
        "format": chain.CURRENT_FORMAT,
        "chained_at": chained_at,
        "event_id": event_id,
        "topic": topic,
        "event_payload": event,
        "draft_id": draft_id,
    }
    return params


async def append_on_driver(
    connection: asyncpg.Connection, params: dict[str, Any]
) -> Appended | None:
    """`append_visit` on a bare asyncpg connection outside any transaction (the statement
    is atomic on its own)."""
    row = await connection.fetchrow(APPEND_SQL, *bound_values(params))
    if row is None:
        return None
    return Appended(seq=row[0], prev_hash=row[1], entry_hash=row[2])
