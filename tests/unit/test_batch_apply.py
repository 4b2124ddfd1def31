"""How a failing batch is taken apart (shared/batch_apply.py), with a transaction that is a
plain function: a poison event costs O(log n) transactions, refused events are dead-lettered
in one more, an outage is waited out on the whole batch, and order is kept throughout."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence

import pytest
from aiokafka import ConsumerRecord
from pydantic import ValidationError

from shared.batch_apply import BatchApplier, Delivery, InvalidEvents
from shared.consumer_defaults import DEFAULT_BATCH_SIZE
from shared.events import RepaymentPosted
from shared.settings import ServiceSettings

MAX_ATTEMPTS = 3


def deliveries(n: int) -> list[Delivery]:
    out = []
    for offset in range(n):
        event = RepaymentPosted.model_validate(
            {
                "loan_id": f"L-{offset}",
                "installment_no": 1,
                "due_date": "2026-11-01",
                "amount_due": "100.00",
                "amount_paid": "0.00",
                "status": "missed",
                "days_past_due": 3,
                "outstanding_principal": "900.00",
            }
        )
        record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            "repayment-posted", offset % 3, offset, 0, 0, None, b"", None, 0, 0, ()
        )
        out.append(Delivery(record, event))
    return out


class Ledger:
    """A stand-in for the database: what committed, in order, and every transaction seen."""

    def __init__(self, fail: Callable[[Sequence[Delivery]], Exception | None]) -> None:
        self._fail = fail
        self.committed: list[uuid.UUID] = []
        self.transactions: list[list[uuid.UUID]] = []
        self.dead: dict[uuid.UUID, str] = {}

    async def transact(self, batch: Sequence[Delivery]) -> int:
        self.transactions.append([d.event.event_id for d in batch])
        failure = self._fail(batch)
        if failure is not None:
            raise failure
        fresh = [d.event.event_id for d in batch if d.event.event_id not in self.committed]
        self.committed.extend(fresh)
        return len(fresh)

    async def dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        self.dead[uuid.UUID(int=record.offset)] = reason

    def applier(self) -> BatchApplier:
        return BatchApplier(
            self.transact, self.dead_letter, max_attempts=MAX_ATTEMPTS, backoff=lambda _: 0.0
        )


async def test_one_poison_among_64_costs_logarithmic_transactions_and_keeps_order() -> None:
    batch = deliveries(64)
    poison = batch[37].event.event_id

    def fail(part: Sequence[Delivery]) -> Exception | None:
        return ValueError("bug") if any(d.event.event_id == poison for d in part) else None

    ledger = Ledger(fail)
    tally = await ledger.applier().apply(batch)

    others = [d.event.event_id for d in batch if d.event.event_id != poison]
    assert ledger.committed == others  # each once, in the order posted
    assert list(ledger.dead) == [uuid.UUID(int=37)]
    assert ledger.dead[uuid.UUID(int=37)].startswith("handler failed: ValueError")
    # One try of the whole, two per halving down to the poison alone, its remaining attempts.
    assert len(ledger.transactions) == 1 + 2 * int(math.log2(64)) + (MAX_ATTEMPTS - 1)
    assert (tally.applied, tally.dead_lettered, tally.splits) == (63, 1, 6)


async def test_refused_events_are_dead_lettered_in_one_more_transaction() -> None:
    batch = deliveries(50)
    refused = {batch[i].event.event_id: f"loan {i} unknown" for i in (3, 20, 49)}

    def fail(part: Sequence[Delivery]) -> Exception | None:
        named = {
            d.event.event_id: refused[d.event.event_id] for d in part if d.event.event_id in refused
        }
        return InvalidEvents(named) if named else None

    ledger = Ledger(fail)
    tally = await ledger.applier().apply(batch)

    assert len(ledger.transactions) == 2
    assert set(ledger.dead) == {uuid.UUID(int=i) for i in (3, 20, 49)}
    assert ledger.dead[uuid.UUID(int=20)] == "loan 20 unknown"
    assert ledger.committed == [d.event.event_id for d in batch if d.event.event_id not in refused]
    assert tally.splits == 0


async def test_an_outage_is_retried_on_the_whole_batch_never_split_nor_dead_lettered() -> None:
    batch = deliveries(40)
    outage = [ConnectionRefusedError(111, "refused")] * 12

    def fail(part: Sequence[Delivery]) -> Exception | None:
        return outage.pop() if outage else None

    ledger = Ledger(fail)
    tally = await ledger.applier().apply(batch)

    assert len(ledger.transactions) == 13
    assert all(len(ids) == 40 for ids in ledger.transactions)
    assert ledger.dead == {}
    assert len(ledger.committed) == 40
    assert (tally.transient_retries, tally.splits) == (12, 0)


async def test_a_batch_failing_only_as_a_whole_is_applied_in_halves_without_dead_letters() -> None:
    """Two events that cannot share a statement (say, one row written twice by one
    INSERT ... ON CONFLICT DO UPDATE): apart, both apply."""
    batch = deliveries(8)
    clash = {batch[1].event.event_id, batch[6].event.event_id}

    def fail(part: Sequence[Delivery]) -> Exception | None:
        together = clash <= {d.event.event_id for d in part}
        return ValueError("row affected twice") if together else None

    ledger = Ledger(fail)
    await ledger.applier().apply(batch)

    assert ledger.committed == [d.event.event_id for d in batch]
    assert ledger.dead == {}
    assert len(ledger.transactions) == 3


async def test_duplicates_are_counted_not_applied_again() -> None:
    batch = deliveries(10)
    ledger = Ledger(lambda _: None)
    await ledger.applier().apply(batch[:4])
    tally = await ledger.applier().apply(batch)
    assert (tally.applied, tally.duplicates, tally.transactions) == (6, 4, 1)
    assert ledger.committed == [d.event.event_id for d in batch]


def test_the_batch_size_is_a_bounded_setting() -> None:
    assert ServiceSettings().consumer_batch_size == DEFAULT_BATCH_SIZE == 2000
    assert ServiceSettings(consumer_batch_size=50).consumer_batch_size == 50
    for refused in (0, 10_001):
        with pytest.raises(ValidationError):
            ServiceSettings(consumer_batch_size=refused)
