"""Keyset pagination for list endpoints: `{"items": [...], "next_cursor": ...}`.

Every list is ordered by (created_at, uuid id); the cursor is that pair of the last item,
opaque to clients and validated on the way back in (a forged cursor is a 422, not a 500).
An empty cursor asks for the first page, as an absent one does. `keyset_page` is the one
place a list applies a cursor, orders, limits and builds its page: a page carries a
`next_cursor` only when another row follows it, so the last page says so.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped

from shared.errors import Problem

T = TypeVar("T")
Row = TypeVar("Row")

# What `encode_cursor` produces is about 100 characters; the bound keeps a forged one (say,
# JSON nested ten thousand deep) from costing more than a glance.
MAX_CURSOR_LENGTH = 256
CursorText = Annotated[
    str,
    Field(
        pattern=rf"^[A-Za-z0-9_-]{{0,{MAX_CURSOR_LENGTH}}}$",
        description="`next_cursor` of the previous page; empty or absent for the first page.",
    ),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    ident: uuid.UUID


def encode_cursor(created_at: datetime, ident: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(ident)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Cursor | None:
    if not cursor:
        return None
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("cursor too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, ident = json.loads(base64.urlsafe_b64decode(padded))
        created = datetime.fromisoformat(created_at)
        if created.tzinfo is None:
            raise ValueError("cursor time has no offset")
        # In UTC here: year 1 at +14:00 overflows, and must do so before the driver sees it.
        return Cursor(created.astimezone(UTC), uuid.UUID(ident))
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise Problem(
            422,
            "Unprocessable Content",
            "cursor is not valid",
            errors=[{"field": "query.cursor", "message": "not a cursor from this API"}],
        ) from exc


def after(created_at: Any, ident: Any, cursor: Cursor) -> ColumnElement[bool]:
    """Rows strictly after the cursor in (created_at, id) order: a row-value comparison
    that PostgreSQL answers from the (created_at, id) index."""
    return tuple_(created_at, ident) > tuple_(cursor.created_at, cursor.ident)


# The order of a list: when a row was created, then its uuid to break ties.
SortKey = tuple[Mapped[datetime], Mapped[uuid.UUID]]


async def keyset_page(
    session: AsyncSession,
    stmt: Select[Row],
    *,
    key: SortKey,
    cursor: str | None,
    limit: int,
    to_item: Callable[[Row], T],
) -> Page[T]:
    """One page of `stmt` (a select of one entity, already narrowed to what the reader may
    see and asked for) in `key` order after `cursor`.

    One statement: `limit + 1` rows are read, so whether another page follows is known
    without a second query, and a list that ends on a full page gives no cursor to an
    empty one. The key's own values come back as extra columns, whatever `to_item` makes
    of the row."""
    created_at, ident = key
    after_cursor = decode_cursor(cursor)
    keyed = stmt.add_columns(created_at, ident)
    if after_cursor is not None:
        keyed = keyed.where(after(created_at, ident, after_cursor))
    keyed = keyed.order_by(created_at, ident).limit(limit + 1)
    rows = (await session.execute(keyed)).all()
    following = None
    if len(rows) > limit:
        last = rows[limit - 1]
        following = encode_cursor(last[-2], last[-1])
    return Page(items=[to_item(row[0]) for row in rows[:limit]], next_cursor=following)
