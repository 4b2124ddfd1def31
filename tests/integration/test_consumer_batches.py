"""The consumer's batches on the real database and a broker of each test's own (so a new
group reads only what the test produced): a backlog on one topic does not starve another,
one poison event among many costs O(log n) transactions, refused events are dead-lettered in
one more, an outage is retried on the whole batch, and a worker killed mid-batch loses
nothing and applies nothing twice. Handlers here are set-based: one multi-row insert."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import Column, Integer, MetaData, String, Table, Uuid, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import devstack
from shared.db import make_engine, make_session_factory, schema_metadata
from shared.events import (
    REPAYMENT_POSTED,
    VISIT_COMPLETED,
    EventEnvelope,
    RepaymentPosted,
    VisitCompleted,
)
from shared.inbox import inbox_table
from shared.kafka import EventConsumer, Handler, InvalidEvents, TopicHandler, make_producer
from tests.conftest import Infra
from tests.ops_support import dead_letters_of
from tests.support import eventually, new_id, visit_event

SCHEMA = "batch_test"
metadata: MetaData = schema_metadata(SCHEMA)
inbox = inbox_table(metadata)
effects = Table(
    "effects",
    metadata,
    Column("event_id", Uuid, nullable=False),
    Column("topic", String(64), nullable=False),
    Column("loan_id", String(64), nullable=False),
    # For a visit: how many postings had been applied when it was.
    Column("postings_before", Integer),
)
# The embedded broker completes a group join in about half the session timeout.
SESSION_TIMEOUT_MS, HEARTBEAT_MS = 3000, 1000


@pytest.fixture(scope="module")
async def sessions(infra: Infra) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(infra.database_url)
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
        await conn.execute(text(f'CREATE SCHEMA "{SCHEMA}"'))
        await conn.run_sync(metadata.create_all)
    yield make_session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def broker() -> AsyncIterator[tuple[str, AIOKafkaProducer]]:
    """A broker of the test's own, with the topics as designed, and a producer on it."""
    with devstack.embedded_broker(devstack.free_port()) as bootstrap:
        await devstack.create_topics(bootstrap)
        producer = make_producer(bootstrap)
        await producer.start()
        try:
            yield bootstrap, producer
        finally:
            await producer.stop()


async def record_effects(session: AsyncSession, events: Sequence[EventEnvelope]) -> None:
    """The set-based effect: one multi-row insert."""
    await session.execute(
        insert(effects),
        [{"event_id": e.event_id, "topic": e.event_type, "loan_id": e.loan_id} for e in events],
    )


def posting(loan_id: str, installment_no: int = 1) -> RepaymentPosted:
    return RepaymentPosted.model_validate(
        {
            "loan_id": loan_id,
            "installment_no": installment_no,
            "due_date": "2026-11-01",
            "amount_due": "100.00",
            "amount_paid": "0.00",
            "status": "missed",
            "days_past_due": 3,
            "outstanding_principal": "900.00",
        }
    )


async def publish(producer: AIOKafkaProducer, events: Iterable[EventEnvelope]) -> None:
    """Send every event (keyed by its loan) and wait until the broker has them all."""
    sent = [
        await producer.send(e.event_type, e.model_dump_json().encode(), key=e.loan_id.encode())
        for e in events
    ]
    await asyncio.gather(*sent)


async def applied_times(
    sessions: async_sessionmaker[AsyncSession], events: Sequence[EventEnvelope]
) -> dict[uuid.UUID, int]:
    """How many effects each of `events` has (absent: none)."""
    async with sessions() as session:
        rows = await session.execute(
            select(effects.c.event_id, func.count())
            .where(effects.c.event_id.in_([e.event_id for e in events]))
            .group_by(effects.c.event_id)
        )
        return {event_id: int(n) for event_id, n in rows.all()}


def all_applied(
    sessions: async_sessionmaker[AsyncSession], events: Sequence[EventEnvelope]
) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return len(await applied_times(sessions, events)) == len(events)

    return probe


@contextlib.asynccontextmanager
async def consuming(
    bootstrap: str,
    sessions: async_sessionmaker[AsyncSession],
    handlers: Mapping[str, Handler],
    producer: AIOKafkaProducer,
    *,
    group: str | None = None,
    batch_size: int = 500,
    max_attempts: int = 5,
    tick_seconds: float = 5.0,
) -> AsyncIterator[EventConsumer]:
    consumer = EventConsumer(
        bootstrap_servers=bootstrap,
        group_id=group or new_id("group"),
        handlers=handlers,
        sessions=sessions,
        inbox_table=inbox,
        producer=producer,
        max_attempts=max_attempts,
        retry_seconds=0.01,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
        batch_size=batch_size,
        tick_seconds=tick_seconds,
    )
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Calls:
    """Every batch a handler was given, by event id."""

    def __init__(self) -> None:
        self.batches: list[list[uuid.UUID]] = []

    def seen(self, events: Sequence[EventEnvelope]) -> None:
        self.batches.append([e.event_id for e in events])


async def test_a_backlog_on_one_topic_does_not_starve_another(
    broker: tuple[str, AIOKafkaProducer], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bootstrap, producer = broker
    backlog = [posting(new_id("L")) for _ in range(5000)]
    visit = VisitCompleted.model_validate(visit_event(new_id("L")))

    async def on_visits(session: AsyncSession, events: Sequence[VisitCompleted]) -> None:
        postings = await session.scalar(
            select(func.count()).select_from(effects).where(effects.c.topic == REPAYMENT_POSTED)
        )
        await session.execute(
            insert(effects),
            [
                {
                    "event_id": e.event_id,
                    "topic": e.event_type,
                    "loan_id": e.loan_id,
                    "postings_before": postings,
                }
                for e in events
            ],
        )

    await publish(producer, backlog)  # the month-end bulk first ...
    await publish(producer, [visit])  # ... then one visit behind it
    handlers: dict[str, Handler] = {
        REPAYMENT_POSTED: TopicHandler(RepaymentPosted, record_effects),
        VISIT_COMPLETED: TopicHandler(VisitCompleted, on_visits),
    }
    async with consuming(bootstrap, sessions, handlers, producer, batch_size=500):
        await eventually(all_applied(sessions, [visit]), within=60)
        await eventually(all_applied(sessions, backlog), within=120)
    async with sessions() as session:
        postings_before = await session.scalar(
            select(effects.c.postings_before).where(effects.c.event_id == visit.event_id)
        )
    # The visit waited for a batch or two of postings, not for the backlog.
    assert postings_before is not None and postings_before <= 2000, postings_before
    assert set((await applied_times(sessions, backlog)).values()) == {1}


async def test_one_poison_among_64_costs_logarithmic_transactions(
    broker: tuple[str, AIOKafkaProducer], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bootstrap, producer = broker
    loan_id, group = new_id("L"), new_id("group")
    events = [posting(loan_id, installment_no=n) for n in range(1, 65)]  # one partition
    poison = events[40]
    calls = Calls()

    async def poisoned(session: AsyncSession, batch: Sequence[RepaymentPosted]) -> None:
        calls.seen(batch)
        if any(e.event_id == poison.event_id for e in batch):
            raise ValueError("cannot plan installment 41")
        await record_effects(session, batch)

    await publish(producer, events)
    max_attempts = 3
    handlers = {REPAYMENT_POSTED: TopicHandler(RepaymentPosted, poisoned)}
    good = [e for e in events if e is not poison]
    async with consuming(
        bootstrap, sessions, handlers, producer, group=group, max_attempts=max_attempts
    ):
        await eventually(all_applied(sessions, good), within=60)
        [dead] = await eventually(lambda: dead_letters_of(bootstrap, REPAYMENT_POSTED, group))
    assert set((await applied_times(sessions, events)).values()) == {1}
    assert poison.event_id not in await applied_times(sessions, [poison])
    assert str(poison.event_id) in dead["payload"]
    assert dead["reason"] == "handler failed: ValueError('cannot plan installment 41')"
    # The whole, two halves per level down to the poison alone, then its last attempts.
    bound = 1 + 2 * math.log2(64) + max_attempts
    assert len(calls.batches) <= bound, [len(b) for b in calls.batches]
    assert max(len(b) for b in calls.batches) == 64  # it was a batch, and it was split


async def test_refused_events_are_dead_lettered_in_one_more_transaction(
    broker: tuple[str, AIOKafkaProducer], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bootstrap, producer = broker
    loan_id, group = new_id("L"), new_id("group")
    events = [posting(loan_id, installment_no=n) for n in range(1, 51)]
    refused = {events[i].event_id: f"installment {i + 1} not on the schedule" for i in (4, 17, 44)}
    calls = Calls()

    async def refusing(session: AsyncSession, batch: Sequence[RepaymentPosted]) -> None:
        calls.seen(batch)
        named = {e.event_id: refused[e.event_id] for e in batch if e.event_id in refused}
        if named:
            raise InvalidEvents(named)
        await record_effects(session, batch)

    await publish(producer, events)
    handlers = {REPAYMENT_POSTED: TopicHandler(RepaymentPosted, refusing)}
    good = [e for e in events if e.event_id not in refused]

    async def three_dead() -> list[dict[str, Any]] | None:
        dead = await dead_letters_of(bootstrap, REPAYMENT_POSTED, group)
        return dead if len(dead) >= 3 else None

    async with consuming(bootstrap, sessions, handlers, producer, group=group):
        await eventually(all_applied(sessions, good), within=60)
        dead = await eventually(three_dead)
    assert len(calls.batches) == 2, [len(b) for b in calls.batches]
    assert calls.batches[1] == [e.event_id for e in good]  # in order, without the refused
    assert sorted(d["reason"] for d in dead) == sorted(refused.values())
    assert set((await applied_times(sessions, events)).values()) == {1}
    assert not set(refused) & set(await applied_times(sessions, events))


async def test_an_outage_is_retried_on_the_whole_batch(
    broker: tuple[str, AIOKafkaProducer],
    sessions: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="shared.kafka")
    bootstrap, producer = broker
    loan_id, group = new_id("L"), new_id("group")
    events = [posting(loan_id, installment_no=n) for n in range(1, 41)]
    calls = Calls()
    outage = [ConnectionRefusedError(111, "refused")] * 8  # more than a bug's attempts

    async def through_an_outage(session: AsyncSession, batch: Sequence[RepaymentPosted]) -> None:
        calls.seen(batch)
        if outage:
            raise outage.pop()
        await record_effects(session, batch)

    await publish(producer, events)
    handlers = {REPAYMENT_POSTED: TopicHandler(RepaymentPosted, through_an_outage)}
    async with consuming(bootstrap, sessions, handlers, producer, group=group, max_attempts=3):
        await eventually(all_applied(sessions, events), within=60)
    assert [len(b) for b in calls.batches] == [40] * 9  # never split
    assert set((await applied_times(sessions, events)).values()) == {1}
    assert await dead_letters_of(bootstrap, REPAYMENT_POSTED, group) == []
    assert (
        sum(
            "a batch of 40 events (network: ConnectionRefusedError" in r.getMessage()
            for r in caplog.records
        )
        == 8
    )


async def test_a_worker_killed_mid_batch_loses_nothing_and_applies_nothing_twice(
    broker: tuple[str, AIOKafkaProducer],
    sessions: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bootstrap, producer = broker
    loan_id, group = new_id("L"), new_id("group")
    events = [posting(loan_id, installment_no=n) for n in range(1, 31)]
    entered = asyncio.Event()

    async def dies_mid_batch(session: AsyncSession, batch: Sequence[RepaymentPosted]) -> None:
        await record_effects(session, batch)  # written, never committed
        entered.set()
        await asyncio.sleep(3600)

    await publish(producer, events)
    dying = {REPAYMENT_POSTED: TopicHandler(RepaymentPosted, dies_mid_batch)}
    async with consuming(bootstrap, sessions, dying, producer, group=group):
        await asyncio.wait_for(entered.wait(), 60)
    assert await applied_times(sessions, events) == {}  # rolled back, offsets not committed

    caplog.set_level(logging.INFO, logger="shared.kafka")
    handlers = {REPAYMENT_POSTED: TopicHandler(RepaymentPosted, record_effects)}
    async with consuming(bootstrap, sessions, handlers, producer, group=group):
        await eventually(all_applied(sessions, events), within=60)
        # Redelivered (core banking sent them again), then a later one on the same loan.
        later = posting(loan_id, installment_no=31)
        await publish(producer, [*events, later])
        await eventually(all_applied(sessions, [later]), within=60)
    assert set((await applied_times(sessions, [*events, later])).values()) == {1}
    # The duplicates are counted in one line per batch, not one per event. (The suite's
    # other consumers run in this process too and log their own batches, redeliveries
    # included: only this group's lines count.)
    ours = re.compile(rf"^group {group}, repayment-posted: .* (\d+) duplicates ignored")
    duplicates = [
        int(found.group(1))
        for r in caplog.records
        if (found := ours.search(r.getMessage())) and int(found.group(1))
    ]
    assert sum(duplicates) == 30 and len(duplicates) <= 3, duplicates


async def test_a_batch_fetched_before_a_rebalance_is_not_applied_nor_its_offsets_committed(
    broker: tuple[str, AIOKafkaProducer], sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The next batch is fetched while one is in the database; when the group rebalances
    meanwhile, every partition is read again from the committed offset by whoever owns it
    now. So neither batch may commit offsets after the rebalance (it could move another
    member's offset back), and the one not yet applied is dropped: both come again."""
    bootstrap, producer = broker
    loan_id, group = new_id("L"), new_id("group")
    events = [posting(loan_id, installment_no=n) for n in range(1, 31)]
    await publish(producer, events)
    consumer: list[EventConsumer] = []
    calls = Calls()

    async def rebalanced_meanwhile(session: AsyncSession, batch: Sequence[RepaymentPosted]) -> None:
        await record_effects(session, batch)
        calls.seen(batch)
        if len(calls.batches) == 2:
            # The loop fetches and validates the third batch meanwhile; then the group
            # rebalances, as aiokafka tells the listener when another member joins.
            await asyncio.sleep(1.0)
            await consumer[0].rebalances.on_partitions_revoked(consumer[0].consumer.assignment())

    handlers = {REPAYMENT_POSTED: TopicHandler(RepaymentPosted, rebalanced_meanwhile)}
    async with consuming(
        bootstrap, sessions, handlers, producer, group=group, batch_size=10, tick_seconds=600
    ) as c:
        consumer.append(c)
        await eventually(all_applied(sessions, events[:20]), within=60)
        await asyncio.sleep(1.0)  # time enough to apply the third batch, were it applied
    assert len(calls.batches) == 2
    assert await applied_times(sessions, events[20:]) == {}
    # Only the first batch's offsets were committed: a new member reads the second batch
    # again (duplicates, ignored) and the third.
    plain = {REPAYMENT_POSTED: TopicHandler(RepaymentPosted, record_effects)}
    async with consuming(bootstrap, sessions, plain, producer, group=group, batch_size=10):
        await eventually(all_applied(sessions, events), within=60)
    assert set((await applied_times(sessions, events)).values()) == {1}
    assert [len(batch) for batch in calls.batches] == [10, 10]
