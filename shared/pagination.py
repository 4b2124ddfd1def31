"""Keyset pagination for list endpoints: `{"items": [...], "next_cursor": ...}`.

Every list is ordered by (created_at, uuid id); the cursor is that pair of the last item,
opaque to clients and validated on the way back in (a forged cursor is a 422, not a 500).
An empty cursor asks for the first page, as an absent one does.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, tuple_

from shared.errors import Problem

T = TypeVar("T")

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


def next_cursor(
    rows: Sequence[T], limit: int, key: Callable[[T], tuple[datetime, uuid.UUID]]
) -> str | None:
    """A cursor when the page is full (there may be more), else None."""
    return encode_cursor(*key(rows[-1])) if rows and len(rows) == limit else None
