"""The delivery guarantees of the shared plumbing, on the real database and broker:
a worker that dies mid-event loses nothing and applies nothing twice, offsets follow the
database commit, transient failures are retried (a full or restarting database, a hung
replica's locks) and never dead-lettered, a dead letter always fits, dead letters can be
replayed, and the outbox survives a broker outage."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import Column, MetaData, String, Table, Uuid, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import devstack
from shared.db import (
    SessionLimits,
    make_engine,
    make_session_factory,
    schema_metadata,
    unit_of_work,
)
from shared.events import RepaymentPosted
from shared.inbox import inbox_table
from shared.kafka import EventConsumer, make_producer
from shared.outbox import OutboxRelay, enqueue, outbox_table
from tests.conftest import Infra
from tests.ops_support import dead_letters_of, run_ops
from tests.support import each_event, eventually, new_id, read_topic

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
# The embedded broker completes a group join in about half the session timeout.
SESSION_TIMEOUT_MS, HEARTBEAT_MS = 3000, 1000


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
    *,
    dead_letters: AIOKafkaProducer | None = None,
) -> AsyncIterator[asyncio.Task[None]]:
    """Run an EventConsumer of repayment-posted in `group_id` for the block's duration."""
    dead_letters = dead_letters or make_producer(infra.bootstrap)
    await dead_letters.start()
    consumer = EventConsumer(
        bootstrap_servers=infra.bootstrap,
        group_id=group_id,
        handlers={"repayment-posted": each_event(RepaymentPosted, handler)},
        sessions=sessions,
        inbox_table=inbox,
        producer=dead_letters,
        retry_seconds=0.05,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
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


async def test_a_cancel_swallowed_below_the_consumer_still_stops_it(
    infra: Infra, sessions: async_sessionmaker[AsyncSession], producer: AIOKafkaProducer
) -> None:
    """Stopping a worker cancels its consumer, and the cancel travels into the batch in
    flight. When something down there lets it pass (on Python 3.11 a library's `wait_for`
    that finishes at the same moment does), the consumer must still stop, not run on
    with nobody to stop it: CI hung for its full 90 minutes on that."""
    loan_id = new_id("L")
    entered = asyncio.Event()

    async def swallows_the_cancel(session: AsyncSession, e: RepaymentPosted) -> None:
        if e.loan_id == loan_id:
            entered.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    async with consuming(infra, sessions, new_id("group"), swallows_the_cancel) as task:
        await publish(producer, posting(loan_id))
        await asyncio.wait_for(entered.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)


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


async def test_an_outage_does_not_spend_the_attempts_a_bug_gets(
    infra: Infra, sessions: async_sessionmaker[AsyncSession], producer: AIOKafkaProducer
) -> None:
    """Seven connection failures, then two failures of another kind, then success: the
    outage is waited out on its own count, so the event still has attempts left."""
    loan_id = new_id("L")
    failures = [ConnectionRefusedError(111, "refused")] * 7 + [KeyError("flaky bug")] * 2

    async def outage_then_bug(session: AsyncSession, e: RepaymentPosted) -> None:
        if e.loan_id == loan_id and failures:
            raise failures.pop(0)
        await record_effect(session, e)

    async with consuming(infra, sessions, new_id("group"), outage_then_bug):
        await publish(producer, posting(loan_id))
        await eventually(lambda: effect_count(sessions, loan_id))
    assert failures == []
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


# --- transient or bug ----------------------------------------------------------------------


def retries_logged(caplog: pytest.LogCaptureFixture, cause: str) -> int:
    return sum(f"({cause}," in record.getMessage() for record in caplog.records)


def plain(database_url: str) -> str:
    return database_url.replace("+asyncpg", "")


async def test_a_full_database_is_waited_out_not_dead_lettered(
    infra: Infra,
    sessions: async_sessionmaker[AsyncSession],
    producer: AIOKafkaProducer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL answering `too many clients` (53300) is a busy database, not a bug: the
    event waits through more failures than a bug is allowed, then lands."""
    caplog.set_level(logging.WARNING, logger="shared.kafka")
    role, loan_id, group = f"busy_{uuid.uuid4().hex[:8]}", new_id("L"), new_id("group")
    admin = await asyncpg.connect(plain(infra.database_url))
    try:
        # A role with one connection slot, held by someone else: every connection the
        # consumer opens is refused with SQLSTATE 53300, as when the server's slots are full.
        await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
        await admin.execute(f'GRANT USAGE ON SCHEMA "{SCHEMA}" TO {role}')
        await admin.execute(f'GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA "{SCHEMA}" TO {role}')
        url = make_url(infra.database_url).set(username=role)
        hog = await asyncpg.connect(plain(url.render_as_string(hide_password=False)))
        busy = make_engine(url.render_as_string(hide_password=False))
        try:
            async with consuming(infra, make_session_factory(busy), group, record_effect):
                await publish(producer, posting(loan_id))

                async def refused_many_times() -> bool:
                    # More than the five attempts a handler bug gets.
                    return retries_logged(caplog, "sqlstate 53300") > 5

                await eventually(refused_many_times, within=60)
                await hog.close()  # a slot frees up
                await eventually(lambda: effect_count(sessions, loan_id), within=30)
        finally:
            await busy.dispose()
            if not hog.is_closed():
                await hog.close()
    finally:
        await admin.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{SCHEMA}" FROM {role}')
        await admin.execute(f'REVOKE ALL ON SCHEMA "{SCHEMA}" FROM {role}')
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
    assert await effect_count(sessions, loan_id) == 1
    dead = await dead_letters_of(infra.bootstrap, "repayment-posted", group)
    assert [d for d in dead if d.get("key") == loan_id] == []


async def test_a_hung_member_holding_row_locks_does_not_stall_the_group(
    infra: Infra,
    sessions: async_sessionmaker[AsyncSession],
    producer: AIOKafkaProducer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A replica stopped mid-batch keeps its transaction and the inbox row it claimed. With
    the session limits the one that took over gives up waiting on the lock (55P03, retried)
    and the server ends the idle transaction, so the event is applied within seconds."""
    caplog.set_level(logging.WARNING, logger="shared.kafka")
    limits = SessionLimits(lock_timeout_ms=300, idle_in_transaction_ms=2000)
    engine = make_engine(infra.database_url, limits=limits)
    group, warm_up, event = new_id("group"), posting(new_id("L")), posting(new_id("L"))
    try:
        async with consuming(infra, make_session_factory(engine), group, record_effect):
            await publish(producer, warm_up)  # the group has joined and applies events
            await eventually(lambda: effect_count(sessions, warm_up.loan_id))

            # The stopped replica: same limits, mid-transaction, holding the event's claim.
            hung = await asyncpg.connect(
                plain(infra.database_url), server_settings=limits.server_settings()
            )
            stopped = hung.transaction()
            await stopped.start()
            await hung.execute(
                f'INSERT INTO "{SCHEMA}".inbox (event_id, topic) VALUES ($1, $2)',
                event.event_id,
                event.event_type,
            )
            await publish(producer, event)
            await eventually(lambda: effect_count(sessions, event.loan_id), within=30)
    finally:
        await engine.dispose()
    assert await effect_count(sessions, event.loan_id) == 1
    assert retries_logged(caplog, "sqlstate 55P03") >= 1  # it waited, then retried
    # The server ended the stopped replica's transaction, releasing its locks.
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
        await hung.fetchval("SELECT 1")
    if not hung.is_closed():
        hung.terminate()


# --- dead letters --------------------------------------------------------------------------


async def test_a_dead_letter_the_broker_refuses_falls_back_to_a_minimal_record(
    infra: Infra, sessions: async_sessionmaker[AsyncSession], producer: AIOKafkaProducer
) -> None:
    # A dead-letter producer whose limit the full record exceeds but the minimal one fits.
    small = AIOKafkaProducer(
        bootstrap_servers=infra.bootstrap, enable_idempotence=False, max_request_size=4096
    )
    group, loan_id = new_id("group"), new_id("L")
    poison = b"\x02" * 20_000
    async with consuming(infra, sessions, group, record_effect, dead_letters=small):
        await producer.send_and_wait("repayment-posted", poison, key=loan_id.encode())
        await publish(producer, posting(loan_id))  # same loan, same partition, after it
        await eventually(lambda: effect_count(sessions, loan_id))
    # (A new group reads the topic from its start: other tests' garbage is dead-lettered too.)
    [dead] = [
        d
        for d in await dead_letters_of(infra.bootstrap, "repayment-posted", group)
        if d.get("key") == loan_id
    ]
    assert dead["payload"] == "" and dead["payload_truncated"] is True
    assert dead["payload_size"] == len(poison)
    assert dead["payload_sha256"] == hashlib.sha256(poison).hexdigest()
    assert dead["key"] == loan_id and dead["reason"].startswith("unparseable event")


async def test_replay_dlq_sends_whole_dead_letters_back_once_their_cause_is_fixed(
    infra: Infra, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # A broker of its own: the session's topics hold other tests' garbage, which this new
    # group would dead-letter too, and replay.
    port = devstack.free_port()
    with devstack.embedded_broker(port) as bootstrap:
        await devstack.create_topics(bootstrap)
        producer = make_producer(bootstrap)
        await producer.start()
        try:
            await replay_on(
                Infra(infra.database_url, bootstrap, infra.pg_data_dir), sessions, producer
            )
        finally:
            await producer.stop()


async def replay_on(
    infra: Infra, sessions: async_sessionmaker[AsyncSession], producer: AIOKafkaProducer
) -> None:
    group, loan_id = new_id("group"), new_id("L")
    fixed = False

    async def buggy_until_fixed(session: AsyncSession, e: RepaymentPosted) -> None:
        if e.loan_id == loan_id and not fixed:
            raise KeyError("bug in the handler")
        await record_effect(session, e)

    replay = ("replay-dlq", "--topic", "repayment-posted", "--group", group)
    async with consuming(infra, sessions, group, buggy_until_fixed):
        # Evidence only: too large to be kept whole.
        await producer.send_and_wait("repayment-posted", b"\x01" * 100_000, key=b"poison")
        await publish(producer, posting(loan_id))

        async def both_dead() -> bool:
            return len(await dead_letters_of(infra.bootstrap, "repayment-posted", group)) == 2

        await eventually(both_dead)
        assert await effect_count(sessions, loan_id) == 0

        fixed = True  # the handler bug is fixed and deployed
        out = await run_ops(infra.database_url, infra.bootstrap, *replay)
        assert f"replayed 1 dead letters of group {group}" in out
        assert "left 1 not kept whole" in out
        await eventually(lambda: effect_count(sessions, loan_id))

        # Replaying again is harmless: the inbox ignores the copy (a later posting of the
        # same loan, on the same partition, is applied after it).
        await run_ops(infra.database_url, infra.bootstrap, *replay)
        await publish(producer, posting(loan_id, installment_no=2))

        async def later_applied() -> bool:
            return await effect_count(sessions, loan_id) >= 2

        await eventually(later_applied)
    assert await effect_count(sessions, loan_id) == 2
