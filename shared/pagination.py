"""Keyset cursors for list endpoints: `{"items": [...], "next_cursor": ...}`."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel

from shared.errors import Problem

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(created_at: datetime, ident: str) -> str:
    raw = json.dumps([created_at.isoformat(), ident]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, ident = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created_at), str(ident)
    except (ValueError, TypeError) as exc:
        raise Problem(
            422,
            "Unprocessable Content",
            "cursor is not valid",
            errors=[{"field": "query.cursor", "message": "not a cursor from this API"}],
        ) from exc
