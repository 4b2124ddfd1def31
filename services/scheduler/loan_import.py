"""The NDJSON loan import, streamed: lines are read as the body arrives, validated one by
one, and registered in chunks of valid lines, each chunk in its own transaction.

Memory is flat in the size of the file: at most one line and one chunk are held, and of the
lines already written only their loan ids (to name the earlier line of a duplicate). Good
lines are written and bad lines are not; each rejected line is reported by its number.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from services.scheduler.registration import Registered
from services.scheduler.schemas import (
    LISTED_REJECTIONS,
    ImportResult,
    LoanImportLine,
    LoanIn,
    RejectedLine,
)

# A loan line is under 1 KiB; a line of 64 KiB is not a loan, and is not held whole.
MAX_LINE_BYTES = 64 * 1024
# Valid lines registered per transaction: large enough that statements are few, small enough
# that a transaction stays short (well inside the statement and lock timeouts).
CHUNK_LINES = 2000

Register = Callable[[Sequence[tuple[str, LoanIn]]], Coroutine[Any, Any, Registered]]


async def numbered_lines(
    body: AsyncIterable[bytes], max_line_bytes: int = MAX_LINE_BYTES
) -> AsyncIterator[tuple[int, bytes | None]]:
    """The lines of `body` with their numbers (from 1, blank lines counted), without their
    line ending; None for a line longer than `max_line_bytes`, which is never buffered."""
    number = 0
    pending = bytearray()
    overlong = False
    async for chunk in body:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not overlong:
                    pending += chunk[start:]
                    if len(pending) > max_line_bytes:
                        overlong = True
                        pending.clear()
                break
            number += 1
            if overlong or len(pending) + end - start > max_line_bytes:
                yield number, None
            elif pending:
                pending += chunk[start:end]
                yield number, bytes(pending).removesuffix(b"\r")
            else:
                yield number, chunk[start:end].removesuffix(b"\r")
            pending.clear()
            overlong = False
            start = end + 1
    if overlong:
        yield number + 1, None
    elif pending:
        yield number + 1, bytes(pending).removesuffix(b"\r")


def parse_line(raw: bytes) -> LoanImportLine | RejectedLine:
    """A loan, or why the line is not one (its line number is filled in by the caller).
    Bytes that are not UTF-8 are refused, never replaced: a plate stored as `A\ufffd1` is a
    different plate."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RejectedLine(line=0, field=None, reason=f"not UTF-8 (byte {exc.start + 1})")
    try:
        return LoanImportLine.model_validate_json(text)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        fields = [".".join(str(part) for part in error["loc"]) for error in errors]
        reason = "; ".join(
            f"{name}: {error['msg']}" if name else error["msg"]
            for name, error in zip(fields, errors, strict=True)
        )
        return RejectedLine(line=0, field=fields[0] or None, reason=reason)


@dataclass
class ImportTally:
    """What an import did so far."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejected_lines: list[RejectedLine] = field(default_factory=list)
    # loan id -> the line that registered it; names the earlier line of a duplicate.
    lines_of: dict[str, int] = field(default_factory=dict)

    def reject(self, rejection: RejectedLine) -> None:
        self.rejected += 1
        if len(self.rejected_lines) < LISTED_REJECTIONS:
            self.rejected_lines.append(rejection)

    def count(self, registered: Registered) -> None:
        self.created += len(registered.created)
        self.updated += len(registered.updated)
        self.unchanged += len(registered.unchanged)

    def result(self) -> ImportResult:
        return ImportResult(
            accepted=self.created + self.updated + self.unchanged,
            created=self.created,
            updated=self.updated,
            unchanged=self.unchanged,
            rejected=self.rejected,
            rejected_lines=self.rejected_lines,
        )


async def import_lines(
    lines: AsyncIterable[tuple[int, bytes | None]],
    register: Register,
    *,
    chunk_lines: int = CHUNK_LINES,
) -> ImportTally:
    """Validate every line and register the valid ones, `chunk_lines` at a time.

    A chunk is written while the next one is read and validated (the database works while
    Python parses), one write at a time and in the file's order."""
    tally = ImportTally()
    chunk: list[tuple[str, LoanIn]] = []
    writing: asyncio.Task[Registered] | None = None
    try:
        async for number, raw in lines:
            if raw is None:
                reason = f"longer than {MAX_LINE_BYTES} bytes"
                tally.reject(RejectedLine(line=number, field=None, reason=reason))
                continue
            if not raw.strip():
                continue
            parsed = parse_line(raw)
            if isinstance(parsed, RejectedLine):
                tally.reject(parsed.model_copy(update={"line": number}))
                continue
            earlier = tally.lines_of.setdefault(parsed.loan_id, number)
            if earlier != number:
                reason = f"loan {parsed.loan_id} is already on line {earlier} of this import"
                tally.reject(RejectedLine(line=number, field="loan_id", reason=reason))
                continue
            chunk.append((parsed.loan_id, parsed))
            if len(chunk) >= chunk_lines:
                if writing is not None:
                    tally.count(await writing)
                writing, chunk = asyncio.create_task(register(chunk)), []
        if writing is not None:
            tally.count(await writing)
            writing = None
        if chunk:
            tally.count(await register(chunk))
    finally:
        # The body failed (too large, the client gone): the chunk being written is
        # abandoned, its transaction rolled back.
        if writing is not None and not writing.done():
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writing
    return tally
