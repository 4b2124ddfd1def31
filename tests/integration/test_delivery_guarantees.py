"""The delivery guarantees of the shared plumbing, on the real database and broker:
a worker that dies mid-event loses nothing and applies nothing twice, offsets follow the
database commit, transient failures are retried, and the outbox survives a broker outage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import Column, MetaData, String, Table, Uuid, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import devstack
from shared.db import make_engine, make_session_factory, schema_metadata, unit_of_work
from shared.events import RepaymentPosted
from shared.inbox import inbox_table
from shared.kafka import EventConsumer, make_producer
from shared.outbox import OutboxRelay, enqueue, outbox_table
from tests.conftest import Infra
from tests.support import eventually, new_id, read_topic

SCHEMA = "delivery_test"
metadata: MetaData = schema_metadata(SCHEMA)
inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
effects = Table(
    "effects",
    metadata,
    Column("event_id", Uuid, nullable=False),
    Column("loan_id", String(64), nullable=False),
)

Handler = Callable[[AsyncSession, RepaymentPosted], Awaitable[None]]


@pytest.fixture(scope="module")
async def sessions(infra: Infra) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(infra.database_url)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
        await conn.run_sync(metadata.create_all)
    yield make_session_factory(engine)
    await engine.dispose()


async def record_effect(session: AsyncSession, event: RepaymentPosted) -> None:
    await session.execute(insert(effects).values(event_id=event.event_id, loan_id=event.loan_id))


async def effect_count(sessions: async_sessionmaker[AsyncSession], loan_id: str) -> int:
    async with sessions() as session:
        stmt = select(func.count()).select_from(effects).where(effects.c.loan_id == loan_id)
        return int((await session.execute(stmt)).scalar_one())


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


async def publish(producer: AIOKafkaProducer, event: RepaymentPosted) -> None:
    await producer.send_and_wait(
        event.event_type, event.model_dump_json().encode(), key=event.loan_id.encode()
    )


@contextlib.asynccontextmanager
async def consuming(
    infra: Infra,
    sessions: async_sessionmaker[AsyncSession],
    group_id: str,
    handler: Handler,
) -> AsyncIterator[asyncio.Task[None]]:
    """Run an EventConsumer of repayment-posted in `group_id` for the block's duration."""
    dead_letters = make_producer(infra.bootstrap)
    await dead_letters.start()
    consumer = EventConsumer(
        bootstrap_servers=infra.bootstrap,
        group_id=group_id,
        handlers={"repayment-posted": handler},
        sessions=sessions,
        inbox_table=inbox,
        producer=dead_letters,
        retry_seconds=0.05,
    )
    task = asyncio.create_task(consumer.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await dead_letters.stop()


async def test_worker_dying_mid_event_loses_nothing_and_applies_it_once(
    infra: Infra, sessions: async_sessionmaker[AsyncSession], producer: AIOKafkaProducer
) -> None:
    group, loan_id = new_id("group"), new_id("L")
    event = posting(loan_id)
    entered = asyncio.Event()

    async def dies_mid_transaction(session: AsyncSession, e: RepaymentPosted) -> None:
        if e.loan_id == loan_id:
            await record_effect(session, e)  # written but never committed
            entered.set()
            await asyncio.sleep(3600)

    async with consuming(infra, sessions, group, dies_mid_transaction):
        await publish(producer, event)
        await asyncio.wait_for(entered.wait(), 60)
    # The worker is gone: its transaction rolled back and its offset was never committed.
    assert await effect_count(sessions, loan_id) == 0

    async with consuming(infra, sessions, group, record_effect):
        await eventually(lambda: effect_count(sessions, loan_id))
        # The same event again, then a later one on the same loan (same partition).
        await publish(producer, event)
        later = posting(loan_id, installment_no=2)
        await publish(producer, later)

        async def later_applied() -> bool:
            return await effect_count(sessions, loan_id) >= 2

        await eventually(later_applied)
    assert await effect_count(sessions, loan_id) == 2  # the first once, the later once


async def test_transient_failure_is_retried_not_dropped(
    infra: Infra, sessions: async_sessionmaker[AsyncSession], producer: AIOKafkaProducer
) -> None:
    loan_id = new_id("L")
    attempts = 0

    async def flaky(session: AsyncSession, e: RepaymentPosted) -> None:
        nonlocal attempts
        if e.loan_id != loan_id:
            return
        attempts += 1
        await record_effect(session, e)
        if attempts < 3:
            raise ConnectionError("owner service unreachable")

    async with consuming(infra, sessions, new_id("group"), flaky):
        await publish(producer, posting(loan_id))
        await eventually(lambda: effect_count(sessions, loan_id))
    assert attempts == 3
    assert await effect_count(sessions, loan_id) == 1


async def test_handler_bug_goes_to_dead_letters_after_bounded_attempts(
    infra: Infra, sessions: async_sessionmaker[AsyncSession], producer: AIOKafkaProducer
) -> None:
    loan_id, group = new_id("L"), new_id("group")

    async def buggy(session: AsyncSession, e: RepaymentPosted) -> None:
        if e.loan_id == loan_id:
            raise KeyError("bug")
        await record_effect(session, e)

    async with consuming(infra, sessions, group, buggy):
        await publish(producer, posting(loan_id))
        dead = await read_topic(
            infra.bootstrap,
            "repayment-posted.dlq",
            lambda r: loan_id in r["payload"] and r.get("consumer_group") == group,
        )
        assert "KeyError" in dead["reason"]
        # ... and the partition is not blocked: a later posting is applied.
        other = new_id("L")
        await publish(producer, posting(other))
        await eventually(lambda: effect_count(sessions, other))


async def test_outbox_keeps_events_through_a_broker_outage(
    infra: Infra, sessions: async_sessionmaker[AsyncSession]
) -> None:
    event = posting(new_id("L"))
    async with unit_of_work(sessions) as session:
        await enqueue(session, outbox, event)

    async def published_at() -> datetime | None:
        async with sessions() as session:
            stmt = select(outbox.c.published_at).where(outbox.c.event_id == event.event_id)
            value: datetime | None = (await session.execute(stmt)).scalar_one()
            return value

    port = devstack.free_port()
    bootstrap = f"127.0.0.1:{port}"
    with devstack.embedded_broker(port):
        # A short request timeout so the outage shows within the test, not after 40 s.
        relay_producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, enable_idempotence=False, request_timeout_ms=2000
        )
        await relay_producer.start()
    relay = OutboxRelay(sessions, outbox, relay_producer)
    try:
        # The broker is down: the batch fails and the row stays unpublished.
        with pytest.raises(Exception):  # noqa: B017 - whichever producer error it is
            await asyncio.wait_for(relay.publish_batch(), 30)
        assert await published_at() is None

        with devstack.embedded_broker(port):  # back, and empty (memory storage)
            await devstack.create_topics(bootstrap)

            async def relayed() -> int:
                with contextlib.suppress(Exception):
                    return await relay.publish_batch()
                return 0

            assert await eventually(relayed) == 1
            record = await read_topic(
                bootstrap, "repayment-posted", lambda r: r["event_id"] == str(event.event_id)
            )
            assert record["loan_id"] == event.loan_id
            assert await published_at() is not None
    finally:
        await relay_producer.stop()


async def test_one_relay_publishes_at_a_time_so_loan_order_holds(
    infra: Infra, sessions: async_sessionmaker[AsyncSession]
) -> None:
    event = posting(new_id("L"))
    async with unit_of_work(sessions) as session:
        await enqueue(session, outbox, event)
    producer = make_producer(infra.bootstrap)
    await producer.start()
    try:
        standby = OutboxRelay(sessions, outbox, producer)
        # Another replica is mid-batch: it holds the outbox's publishing lock.
        async with unit_of_work(sessions) as other_replica:
            await other_replica.execute(
                select(func.pg_advisory_xact_lock(func.hashtext(outbox.fullname)))
            )
            assert await standby.publish_batch() == 0
        assert await standby.publish_batch() >= 1
    finally:
        await producer.stop()
    record = await read_topic(
        infra.bootstrap, "repayment-posted", lambda r: r["event_id"] == str(event.event_id)
    )
    assert record["loan_id"] == event.loan_id


async def test_published_rows_are_purged_after_the_retention(
    infra: Infra, sessions: async_sessionmaker[AsyncSession]
) -> None:
    old, recent, pending = posting(new_id("L")), posting(new_id("L")), posting(new_id("L"))
    now = datetime.now(UTC)
    async with unit_of_work(sessions) as session:
        for event in (old, recent, pending):
            await enqueue(session, outbox, event)
        for event, published in ((old, now - timedelta(days=8)), (recent, now)):
            await session.execute(
                update(outbox)
                .where(outbox.c.event_id == event.event_id)
                .values(published_at=published)
            )
    producer = make_producer(infra.bootstrap)  # not started: purging sends nothing
    relay = OutboxRelay(sessions, outbox, producer, retention=timedelta(days=7))
    assert await relay.purge_published() >= 1
    async with sessions() as session:
        left = set((await session.execute(select(outbox.c.event_id))).scalars().all())
    assert old.event_id not in left
    assert {recent.event_id, pending.event_id} <= left
