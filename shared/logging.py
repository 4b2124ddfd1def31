"""Structured JSON logs carrying request_id / event_id / loan_id from context.

PII never reaches a log line: services log ids only, and the formatter masks anything
that looks like a mainland national id or mobile number as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
event_id_var: ContextVar[str | None] = ContextVar("event_id", default=None)
loan_id_var: ContextVar[str | None] = ContextVar("loan_id", default=None)

_NATIONAL_ID = re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)")
_MOBILE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")


def scrub(text: str) -> str:
    text = _NATIONAL_ID.sub(lambda m: "*" * 14 + m.group(0)[-4:], text)
    return _MOBILE.sub(lambda m: "*" * 7 + m.group(0)[-4:], text)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        for key, var in (
            ("request_id", request_id_var),
            ("event_id", event_id_var),
            ("loan_id", loan_id_var),
        ):
            value = var.get()
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at emit time (test runners swap it)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka is chatty about group rebalances at INFO.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


@contextmanager
def bind_event(*, event_id: str, loan_id: str) -> Iterator[None]:
    tokens = (event_id_var.set(event_id), loan_id_var.set(loan_id))
    try:
        yield
    finally:
        event_id_var.reset(tokens[0])
        loan_id_var.reset(tokens[1])
