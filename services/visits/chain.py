"""The tamper-evident record of visits: pure hashing and verification, no I/O.

Every recorded visit gets the next entry of its loan's chain. The entry commits to the
visit's immutable fields (`payload_hash`, SHA-256 over their canonical JSON) and to the
loan's previous entry (`prev_hash`); `entry_hash` is SHA-256 over the canonical JSON of
`{seq, prev_hash, payload_hash}`. Changing any recorded field, or removing, inserting or
reordering an entry, breaks the hashes of that entry or of the one after it.

The canonical form is part of the record: changing it invalidates every stored chain, so
it may only change together with a migration that re-chains (and an auditor's consent),
or as a new format beside the old ones. Each entry names its `format`:

- 1: the visit's recorded fields (`CHAINED_FIELDS`). Entries written before migration 0006.
- 2: those, plus the loan's `region` and the `evidence` attached to the visit, as
  `[{evidence_id, sha256}]` sorted by id: replacing a photo's bytes (its stored hash), or
  attaching, detaching or moving evidence afterwards breaks the entry. Entries written
  before migration 0007.
- 3: format 2, plus the version's place among the visit's versions (`corrects_visit_id`,
  `version`); its `evidence` is what is attached to it and what it carries over from the
  version it corrects. Every new entry.

Supervisors' review decisions are chained too, per loan, in a chain of their own
(`visit_reviews`, `REVIEW_FIELDS`): each commits to the decision, its reason, reviewer and
time, and to the reviewed version's own `entry_hash`, so a decision cannot be moved to
another version or rewritten afterwards. A chain of their own, not entries in the visits'
chain: a visit's entry is written once, when it is submitted, and stays the proof of what
was submitted whatever is decided about it later.

An entry whose format was flipped from 2 to 1 no longer matches either: the two forms of
the same visit hash differently.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# The `prev_hash` of a loan's first entry.
GENESIS = "0" * 64

# The visit columns an entry commits to: everything recorded about the visit, and the hash
# of what was sent, which for a partner's report covers the report as received (kept in
# `third_party_reports`, checked against it on verification). Not the idempotency key.
CHAINED_FIELDS = (
    "visit_id",
    "request_hash",
    "loan_id",
    "agent_id",
    "task_id",
    "method",
    "outcome",
    "started_at",
    "ended_at",
    "findings",
    "geo_lat",
    "geo_lon",
    "notes",
    "created_at",
)


# The fields format 2 adds to CHAINED_FIELDS.
REGION = "region"
EVIDENCE = "evidence"
# The fields format 3 adds to format 2's.
VERSION_FIELDS = ("corrects_visit_id", "version")
FORMATS = (1, 2, 3)
CURRENT_FORMAT = 3

# What a review entry commits to: the decision, and the reviewed version's entry hash.
REVIEW_FIELDS = (
    "review_id",
    "visit_id",
    "loan_id",
    "decision",
    "reason",
    "reviewed_by",
    "reviewed_at",
    "visit_entry_hash",
)


def evidence_items(pairs: Iterable[tuple[uuid.UUID | str, str]]) -> list[dict[str, str]]:
    """The `evidence` of a format-2 payload: (evidence_id, sha256) pairs in one order."""
    items = [{"evidence_id": str(ident), "sha256": sha256} for ident, sha256 in pairs]
    return sorted(items, key=lambda item: item["evidence_id"])


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        # One spelling per instant, whatever offset or precision the driver hands back.
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def canonical(document: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: one byte string per document."""
    return json.dumps(
        {key: _jsonable(value) for key, value in document.items()},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode()


def payload_hash(visit: Mapping[str, Any], format: int = 1) -> str:
    """SHA-256 of the canonical JSON of the visit's chained fields in `format`; for format
    2, `visit` also carries `region` and `evidence` (`evidence_items`)."""
    document = {name: visit[name] for name in CHAINED_FIELDS}
    if format not in FORMATS:
        raise ValueError(f"unknown chain format {format}")
    if format >= 2:
        document[REGION] = visit[REGION]
        document[EVIDENCE] = evidence_items(
            (item["evidence_id"], item["sha256"]) for item in visit[EVIDENCE]
        )
    if format >= 3:
        document.update({name: visit[name] for name in VERSION_FIELDS})
    return hashlib.sha256(canonical(document)).hexdigest()


def review_payload_hash(review: Mapping[str, Any], format: int = 1) -> str:
    """SHA-256 of the canonical JSON of a review decision (`REVIEW_FIELDS`); one format."""
    if format != 1:
        raise ValueError(f"unknown review chain format {format}")
    return hashlib.sha256(canonical({name: review[name] for name in REVIEW_FIELDS})).hexdigest()


def entry_hash(seq: int, prev_hash: str, payload: str) -> str:
    return hashlib.sha256(
        canonical({"seq": seq, "prev_hash": prev_hash, "payload_hash": payload})
    ).hexdigest()


@dataclass(frozen=True)
class Link:
    """A new entry: what is stored beside the visit."""

    seq: int
    prev_hash: str
    payload_hash: str
    entry_hash: str


def next_link(previous: tuple[int, str] | None, visit: Mapping[str, Any], format: int = 1) -> Link:
    """The entry following `previous` (its seq and entry hash; None for a loan's first).
    Format 1 by default: migration 0003 chained the visits of its day with it."""
    seq, prev_hash = (previous[0] + 1, previous[1]) if previous else (1, GENESIS)
    payload = payload_hash(visit, format)
    return Link(seq, prev_hash, payload, entry_hash(seq, prev_hash, payload))


def next_review_link(previous: tuple[int, str] | None, review: Mapping[str, Any]) -> Link:
    """The review decision's entry following the loan's previous decision's."""
    seq, prev_hash = (previous[0] + 1, previous[1]) if previous else (1, GENESIS)
    payload = review_payload_hash(review)
    return Link(seq, prev_hash, payload, entry_hash(seq, prev_hash, payload))


@dataclass(frozen=True)
class StoredEntry:
    """An entry as read back, with the visit it points to (None if the row is gone)."""

    loan_id: str
    seq: int
    visit_id: uuid.UUID
    prev_hash: str
    payload_hash: str
    entry_hash: str
    visit: Mapping[str, Any] | None
    # The partner's report the visit came from, if it did.
    report: Mapping[str, Any] | None = None
    format: int = 1


@dataclass(frozen=True)
class Break:
    loan_id: str
    seq: int | None
    visit_id: uuid.UUID
    reason: str


@dataclass
class Verification:
    """Walks entries ordered by (loan_id, seq) and keeps the first break."""

    # The request hash a stored partner's report hashes to (schemas know its canonical form).
    report_hash: Callable[[Mapping[str, Any]], str] | None = None
    # What an entry's row hashes to: a visit's by default, `review_payload_hash` for the
    # chain of review decisions (then `formats` is (1,) and `noun` "review").
    hasher: Callable[[Mapping[str, Any], int], str] = payload_hash
    formats: tuple[int, ...] = FORMATS
    noun: str = "visit"
    checked: int = 0
    first_break: Break | None = None
    _loan: str | None = None
    _previous: tuple[int, str] | None = None

    def feed(self, entries: Iterable[StoredEntry]) -> None:
        for entry in entries:
            if self.first_break is not None:
                return
            self.checked += 1
            reason = self._check(entry)
            if reason is not None:
                self.first_break = Break(entry.loan_id, entry.seq, entry.visit_id, reason)

    def _check(self, entry: StoredEntry) -> str | None:
        if entry.loan_id != self._loan:
            self._loan, self._previous = entry.loan_id, None
        expected_seq, expected_prev = (
            (self._previous[0] + 1, self._previous[1]) if self._previous else (1, GENESIS)
        )
        self._previous = (entry.seq, entry.entry_hash)
        if entry.seq != expected_seq:
            return f"sequence {entry.seq} where {expected_seq} was expected"
        if entry.prev_hash != expected_prev:
            return "prev_hash is not the previous entry's hash"
        if entry.visit is None:
            return f"the {self.noun} row is missing"
        if entry.format not in self.formats:
            return f"unknown chain format {entry.format}"
        if self.hasher(entry.visit, entry.format) != entry.payload_hash:
            if self.noun != "visit":
                return f"the {self.noun} was altered after it was recorded"
            return "the visit row or its evidence was altered after it was recorded"
        if entry_hash(entry.seq, entry.prev_hash, entry.payload_hash) != entry.entry_hash:
            return "entry_hash does not match the entry"
        if (
            entry.report is not None
            and self.report_hash is not None
            and self.report_hash(entry.report) != entry.visit["request_hash"]
        ):
            return "the partner's report was altered after it was recorded"
        return None
