"""Structured JSON logs carrying request_id / event_id / loan_id from context.

PII never reaches a log line: services log ids only, and the formatter masks anything
that looks like a national id or phone number (shared.pii.mask_pii) as a second line of
defence. uvicorn's own loggers go through the same formatter, tracebacks included.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from shared.pii import mask_pii

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
event_id_var: ContextVar[str | None] = ContextVar("event_id", default=None)
loan_id_var: ContextVar[str | None] = ContextVar("loan_id", default=None)

# The servers' own loggers: by default uvicorn prints plain text (a 500's traceback with
# whatever values it holds) to its own handlers, past the formatter and its masking.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def scrub(text: str) -> str:
    return mask_pii(text)


class CheckedId(str):
    """An id already known to carry nothing the masker would hide (the request id the edge
    kept or made, shared.middleware): logged as it is, not masked again on every line."""

    __slots__ = ()


# Arguments masked alone (text) or not at all (a UUID: a capture's line names its visit, and
# masking its digits cost more than the rest of the line). A number (int, float) is masked
# with the whole line, as before: a phone number can be one.
_PLAIN_ARGS = (str, uuid.UUID, bool, type(None))


def _message(record: logging.LogRecord) -> str:
    """The record's message, masked. With %-style arguments, the template and each argument
    that is text are masked on their own, and UUIDs not at all (an id, whose digits are no
    number to hide): the result of masking the whole line, for a fraction of the cost, as no
    message of ours splits a number across its arguments. Anything else (a number, an
    object) is masked with the whole line."""
    args = record.args
    if (
        isinstance(args, tuple)
        and args
        and isinstance(record.msg, str)
        and all(isinstance(arg, _PLAIN_ARGS) for arg in args)
    ):
        masked = tuple(scrub(arg) if isinstance(arg, str) else arg for arg in args)
        return scrub(record.msg) % masked
    return scrub(record.getMessage())


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
            "message": _message(record),
        }
        for key, var in (
            ("request_id", request_id_var),
            ("event_id", event_id_var),
            ("loan_id", loan_id_var),
        ):
            value = var.get()
            if value is not None:
                # Ids come from callers (a request id, a loan id in an event): masked too,
                # unless the edge checked it already.
                entry[key] = value if isinstance(value, CheckedId) else scrub(value)
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
    # The JSON line names no source file, line, thread or process: not looking them up on
    # every record is the logging module's documented optimisation: a capture's line went
    # from 25 to 20 µs.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        # Only a logger uvicorn gave handlers of its own is re-routed through ours. One it
        # left without (`--no-access-log` empties `uvicorn.access` and stops it propagating)
        # stays as uvicorn set it: propagating it would turn the access log back on.
        if server_logger.handlers:
            server_logger.handlers.clear()
            server_logger.propagate = True
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
