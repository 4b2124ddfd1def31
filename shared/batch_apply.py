"""Applying one topic's batch of events: whole when it can, in halves when it cannot.

A batch is applied in one transaction. When that fails:
- the handler named events it refuses (`InvalidEvents`): those are dead-lettered and the rest
  applied again without them, in one more transaction;
- a transient cause (database or broker down, a lock held by a hung replica): the same batch
  is retried whole, with backoff counted per cause, for as long as it lasts. Nothing is split
  or dead-lettered for an outage;
- anything else (a bug, bad data): the batch is applied in two halves, each in its own
  transaction, recursively, so a poison event among n costs about 2·log2(n) transactions and
  the good events around it are applied. A lone event that keeps failing gets a bounded number
  of attempts, then goes to the dead-letter topic with the reason.

Halves keep their order (the first half is applied before the second), so the events of one
partition, hence of one loan, are still applied in the order they were posted.

No I/O of its own: the consumer passes how to run one transaction and how to dead-letter.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from aiokafka import ConsumerRecord

from shared.events import EventEnvelope
from shared.failures import transient_cause
from shared.logging import bind_event

log = logging.getLogger("shared.kafka")


class InvalidEvents(Exception):
    """Events of a batch that are well-formed but cannot be applied (e.g. they refer to a
    loan nobody registered), by event id, with the reason. The batch's transaction is
    rolled back; these go to the dead-letter topic and the rest of the batch is applied
    without them, so one bad event never blocks a partition."""

    def __init__(self, reasons: Mapping[uuid.UUID, str]) -> None:
        super().__init__("; ".join(f"{event_id}: {why}" for event_id, why in reasons.items()))
        self.reasons = dict(reasons)


class Delivery(NamedTuple):
    """A record and the event validated from it (a tuple: one per record of every batch)."""

    record: ConsumerRecord[bytes, bytes]
    event: EventEnvelope


@dataclass
class Tally:
    """What became of one batch; the consumer logs it once per batch."""

    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    transactions: int = 0
    splits: int = 0
    transient_retries: int = 0


# One transaction over the deliveries: the inbox claim and the handler. Returns how many
# were fresh (the others had been applied before).
Transact = Callable[[Sequence[Delivery]], Awaitable[int]]
DeadLetter = Callable[[ConsumerRecord[bytes, bytes], str], Awaitable[None]]


class BatchApplier:
    """Applies batches through `transact`, splitting and dead-lettering as described above."""

    def __init__(
        self,
        transact: Transact,
        dead_letter: DeadLetter,
        *,
        max_attempts: int,
        backoff: Callable[[int], float],
    ) -> None:
        self._transact = transact
        self._dead_letter = dead_letter
        self._max_attempts = max_attempts
        self._backoff = backoff

    async def apply(self, batch: Sequence[Delivery]) -> Tally:
        tally = Tally()
        await self._apply(list(batch), tally)
        return tally

    async def _apply(self, batch: list[Delivery], tally: Tally) -> None:
        transient: Counter[str] = Counter()
        bugs = 0
        while batch:
            tally.transactions += 1
            try:
                fresh = await self._transact(batch)
            except asyncio.CancelledError:
                raise
            except InvalidEvents as exc:
                refused = [d for d in batch if d.event.event_id in exc.reasons]
                if refused:
                    for delivery in refused:
                        await self._send_dead(delivery, exc.reasons[delivery.event.event_id])
                    tally.dead_lettered += len(refused)
                    batch = [d for d in batch if d.event.event_id not in exc.reasons]
                    continue
                failure: Exception = exc  # names none of these events: a handler bug
            except Exception as exc:  # noqa: BLE001 - classified below, never lost
                cause = transient_cause(exc)
                if cause is not None:
                    transient[cause] += 1
                    tally.transient_retries += 1
                    delay = self._backoff(transient[cause])
                    log.warning(
                        "transient failure applying %s (%s, attempt %d), retrying in %.1fs: %s",
                        _what(batch),
                        cause,
                        transient[cause],
                        delay,
                        type(exc).__name__,
                    )
                    await asyncio.sleep(delay)
                    continue
                failure = exc
            else:
                tally.applied += fresh
                tally.duplicates += len(batch) - fresh
                return

            if len(batch) > 1:
                tally.splits += 1
                log.debug(
                    "batch of %d failed (%s); applying it in halves",
                    len(batch),
                    type(failure).__name__,
                )
                middle = len(batch) // 2
                await self._apply(batch[:middle], tally)
                await self._apply(batch[middle:], tally)
                return

            [alone] = batch
            bugs += 1
            with bind_event(event_id=str(alone.event.event_id), loan_id=alone.event.loan_id):
                if bugs >= self._max_attempts:
                    log.error(
                        "giving up on event after %d failed attempts",
                        bugs,
                        exc_info=failure,
                    )
                    await self._send_dead(alone, f"handler failed: {failure!r}")
                    tally.dead_lettered += 1
                    return
                log.error("event handler failed (attempt %d)", bugs, exc_info=failure)
            await asyncio.sleep(self._backoff(bugs))

    async def _send_dead(self, delivery: Delivery, reason: str) -> None:
        with bind_event(event_id=str(delivery.event.event_id), loan_id=delivery.event.loan_id):
            await self._dead_letter(delivery.record, reason)


def _what(batch: Sequence[Delivery]) -> str:
    if len(batch) == 1:
        return "event"
    return f"a batch of {len(batch)} events"
