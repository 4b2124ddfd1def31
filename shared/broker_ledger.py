"""Noticing that the broker lost records, from offsets alone.

Offsets on a Kafka partition only ever grow. A consumer's committed offsets and the offsets a
producer is acknowledged at are therefore marks the broker's log can never fall below, unless
the log itself was lost (the embedded broker keeps topics in memory, so a restart starts every
partition again at offset 0, and forgets the groups' commits). The ledger keeps, per
partition, the highest such mark of one worker role; a record fetched, an acknowledgement or
a committed offset below the mark is a loss.

Pure bookkeeping, no I/O: the consumer and the relay feed it, `shared.health` persists it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from shared.events import ALERT_RAISED, REPAYMENT_POSTED, VISIT_COMPLETED

Kind = Literal["consumer", "relay"]
Partition = tuple[str, int]

# Who can send a topic's events again. Our services re-publish from their outbox.
PRODUCER_OF = {VISIT_COMPLETED: "visits", ALERT_RAISED: "alerts"}
# The clocks of the producing host and ours may disagree a little; re-sending a minute too
# much is harmless (consumers deduplicate), a minute too little is not.
CLOCK_MARGIN = timedelta(minutes=1)


def fingerprint(key: bytes | None, value: bytes | None) -> str:
    """A digest telling one record from another at the same offset."""
    digest = hashlib.sha256()
    for part in (key or b"", value or b""):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:32]


def consumer_role(group_id: str) -> str:
    return f"consumer:{group_id}"


def relay_role(outbox_fullname: str) -> str:
    return f"relay:{outbox_fullname}"


@dataclass
class Mark:
    """What one role knows the broker held on one partition."""

    next_offset: int
    # When this role first saw the partition's current log (after a loss: the new log).
    since: datetime
    # The broker time of the record just below `next_offset`, when known.
    record_at: datetime | None = None
    # A digest of that record (relays), to ask the broker whether it still holds it.
    fingerprint: str | None = None


@dataclass(frozen=True)
class Loss:
    role: str
    kind: Kind
    topic: str
    partition: int
    expected_offset: int  # the broker held at least this much ...
    found_offset: int  # ... and now holds only this much
    lost_since: datetime  # records from about this time on may be gone
    detected_at: datetime

    def remedy(self, service: str | None) -> str:
        """What the operator runs, in words: re-send, then acknowledge."""
        since = (self.lost_since - CLOCK_MARGIN).astimezone(UTC).isoformat(timespec="seconds")
        # A relay re-sends its own outbox; a consumer asks whoever produces the topic.
        producer = service if self.kind == "relay" else PRODUCER_OF.get(self.topic)
        if producer is not None:
            resend = f"python -m shared.ops republish --service {producer} --since {since}"
        elif self.topic == REPAYMENT_POSTED:
            resend = f"ask core banking to re-send {self.topic} postings since {since}"
        else:
            resend = f"have the producer of {self.topic} re-send its events since {since}"
        if self.kind == "relay":
            resend += " (the consumers' own loss reports may name a later time)"
        ack = f"python -m shared.ops ack-loss --service {service}" if service else "acknowledge it"
        return f"{resend}; consumers deduplicate, so re-sending is safe; then {ack}"

    def describe(self) -> str:
        return (
            f"the broker lost records of {self.topic} partition {self.partition}: "
            f"{self.role} had seen it up to offset {self.expected_offset}, "
            f"it now stands at {self.found_offset}"
        )


@dataclass
class BrokerLedger:
    """The marks of one role, and which of them still have to be saved."""

    role: str
    kind: Kind
    marks: dict[Partition, Mark] = field(default_factory=dict)
    advanced: set[Partition] = field(default_factory=set)
    reset: set[Partition] = field(default_factory=set)

    def merge(self, saved: dict[Partition, Mark]) -> None:
        """Take marks saved earlier (by this role's previous runs or other replicas),
        keeping whichever is higher."""
        for key, mark in saved.items():
            current = self.marks.get(key)
            if current is None or mark.next_offset > current.next_offset:
                self.marks[key] = mark

    def advance(
        self,
        topic: str,
        partition: int,
        next_offset: int,
        record_at: datetime | None = None,
        fingerprint: str | None = None,
    ) -> None:
        """The broker holds `topic`/`partition` up to `next_offset` (committed or acknowledged)."""
        key = (topic, partition)
        mark = self.marks.get(key)
        if mark is None:
            self.marks[key] = Mark(next_offset, _now(), record_at, fingerprint)
        elif next_offset > mark.next_offset:
            mark.next_offset = next_offset
            mark.record_at = record_at or mark.record_at
            mark.fingerprint = fingerprint
        else:
            return
        self.advanced.add(key)

    def check(
        self, topic: str, partition: int, offset: int, *, reset_to: int | None = None
    ) -> Loss | None:
        """The broker now stands at `offset` on `topic`/`partition` (a record it gave us, an
        acknowledgement, or the commit it keeps for us). Below our mark: a loss, and the
        mark restarts at `reset_to` (default `offset`) so the same loss is reported once."""
        mark = self.marks.get((topic, partition))
        if mark is None or offset >= mark.next_offset:
            return None
        return self.lost(topic, partition, offset, reset_to=reset_to)

    def lost(
        self, topic: str, partition: int, found_offset: int, *, reset_to: int | None = None
    ) -> Loss | None:
        """The broker no longer holds what we marked on `topic`/`partition` (found some
        other way, e.g. the record at our mark is another one): the loss, and the mark
        restarts at `reset_to` (default `found_offset`)."""
        key = (topic, partition)
        mark = self.marks.get(key)
        if mark is None:
            return None
        now = _now()
        lost_since = mark.since if self.kind == "relay" else (mark.record_at or mark.since)
        loss = Loss(
            role=self.role,
            kind=self.kind,
            topic=topic,
            partition=partition,
            expected_offset=mark.next_offset,
            found_offset=found_offset,
            lost_since=lost_since,
            detected_at=now,
        )
        self.marks[key] = Mark(found_offset if reset_to is None else reset_to, since=now)
        self.reset.add(key)
        self.advanced.discard(key)
        return loss

    def take_unsaved(self) -> tuple[dict[Partition, Mark], dict[Partition, Mark]]:
        """(advanced, reset) marks not saved yet; `give_back` them if saving fails."""
        advanced = {k: self.marks[k] for k in self.advanced}
        reset = {k: self.marks[k] for k in self.reset}
        self.advanced, self.reset = set(), set()
        return advanced, reset

    def give_back(self, advanced: dict[Partition, Mark], reset: dict[Partition, Mark]) -> None:
        self.advanced |= advanced.keys() - self.reset
        self.reset |= reset.keys()


def _now() -> datetime:
    return datetime.now(UTC)
