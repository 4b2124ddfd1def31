"""Kafka plumbing: producer factory and the at-least-once consumer loop.

The loop works in batches, one per topic: every turn each subscribed topic gets its own fetch
of up to `batch_size` records (from all its assigned partitions, each partition's records in
order), so a backlog on one topic never starves another. A topic's records are validated
against its model, applied in one database transaction together with their inbox rows
(`shared.batch_apply`: a failing batch is split in halves until the bad event stands alone),
and the offsets of all those partitions are committed in one call, only after that
transaction has committed. While a batch is in the database the next one is fetched and
validated (the consumer's own CPU), and it is applied once the one before is committed. What
cannot be parsed or validated goes to `<topic>.dlq` with the
reason; transient failures (database, broker, another service down) are retried and never
skipped. No single record stops the loop: its dead letter always fits
(`shared.dead_letters`), and a failed offset commit is logged and passed over (the records
come again and the inbox ignores them).

On a health tick (every few seconds) the consumer makes sure its topics exist as designed
(`shared.topics_admin`: after a broker restart they may be missing or auto-created with
another partition count), notices whether the broker lost records (`shared.broker_ledger`:
a record or a committed offset below what the group committed) and reports its heartbeat
(`shared.health`). Metadata is refreshed every few seconds, so a
partition added to a topic is consumed within seconds rather than after five minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import inbox
from shared.batch_apply import BatchApplier, Delivery, InvalidEvents, Tally
from shared.broker_ledger import BrokerLedger, Loss, consumer_role
from shared.consumer_defaults import DEFAULT_BATCH_SIZE, DEFAULT_FETCH_MAX_WAIT_MS
from shared.db import unit_of_work
from shared.dead_letter_sender import DeadLetterSender
from shared.events import EventEnvelope, dlq_topic
from shared.failures import backoff_seconds, transient_cause
from shared.health import WorkerHealth
from shared.topics_admin import TopicKeeper

log = logging.getLogger(__name__)

__all__ = ["EventConsumer", "Handler", "InvalidEvents", "TopicHandler", "make_producer"]

E = TypeVar("E", bound=EventEnvelope)


@dataclass(frozen=True)
class TopicHandler(Generic[E]):
    """How a consumer applies one topic: the event model its records are validated against,
    and a batch handler. The handler gets only events not applied before (the inbox is
    claimed for the batch first), a partition's events in their order, and runs inside the
    batch's transaction: it reads what it needs in one query per table and writes with
    multi-row statements. Events it cannot apply it names in `InvalidEvents`."""

    model: type[E]
    apply: Callable[[AsyncSession, Sequence[E]], Awaitable[None]]


# What the consumer is given per topic.
Handler = TopicHandler[Any]

# How long an idle consumer waits for records before its loop turns again (the wait ends as
# soon as any arrive).
IDLE_WAIT_MS = 500
# Records validated between two turns of the event loop (see _validate).
YIELD_EVERY = 100
# How long a stopping consumer waits for the batch in flight to roll back.
STOP_WAIT_SECONDS = 10.0


# Clients refresh topic metadata this often: a partition added by a broker that restarted
# and auto-created a topic is assigned within seconds (aiokafka's default is 5 minutes).
METADATA_MAX_AGE_MS = 5_000


class _OncePerMinute(logging.Filter):
    """Lets aiokafka's retry messages through once a minute each: it logs every retry of a
    failing commit at ERROR, ten a second (2,877 lines in one broker restart), while the
    consumer's own warning already says what happens."""

    def __init__(self, prefixes: tuple[str, ...], every_seconds: float = 60.0) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._every = every_seconds
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        template = str(record.msg)
        if not template.startswith(self._prefixes):
            return True
        now = time.monotonic()
        if now - self._last.get(template, -self._every) < self._every:
            return False
        self._last[template] = now
        return True


def _quiet_commit_retries() -> None:
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    if not any(isinstance(f, _OncePerMinute) for f in coordinator.filters):
        coordinator.addFilter(_OncePerMinute(("OffsetCommit failed",)))


def make_producer(bootstrap_servers: str) -> AIOKafkaProducer:
    # Tansu has no idempotent producer; the outbox and inbox give exactly-once effects.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        metadata_max_age_ms=METADATA_MAX_AGE_MS,
    )


class Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    """Counts the group's rebalances that took partitions from this member. After one, every
    partition (kept or new) is read again from the group's committed offset, so a batch
    fetched before it is stale: it is not applied, and its offsets are not committed (a
    commit for a partition another member now reads would move that member's offset back).
    Its records come again to whoever reads the partition now; the inbox makes that safe."""

    def __init__(self) -> None:
        self.count = 0

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        if revoked:
            self.count += 1

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        return None


class EventConsumer:
    """Consumes topics for one consumer group and applies each event exactly once."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        handlers: Mapping[str, Handler],
        sessions: async_sessionmaker[AsyncSession],
        inbox_table: Table,
        producer: AIOKafkaProducer,
        max_attempts: int = 5,
        retry_seconds: float = 0.5,
        max_retry_seconds: float = 10.0,
        health: WorkerHealth | None = None,
        tick_seconds: float = 5.0,
        broker_timeout_seconds: float = 5.0,
        commit_timeout_seconds: float = 2.0,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        batch_size: int = DEFAULT_BATCH_SIZE,
        fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS,
    ) -> None:
        self._group_id = group_id
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._handlers = dict(handlers)
        self._sessions = sessions
        self._inbox = inbox_table
        self._dead_letters = DeadLetterSender(producer, group_id, self._backoff)
        self._batch_size = batch_size
        self._applier = BatchApplier(
            self._transact,
            self._dead_letters.send,
            max_attempts=max_attempts,
            backoff=self._backoff,
        )
        self._retry_seconds = retry_seconds
        self._max_retry_seconds = max_retry_seconds
        self._health = health
        self._tick_seconds = tick_seconds
        # No single broker call (a commit, a health check) may hold the loop longer.
        self._broker_timeout = broker_timeout_seconds
        # A commit takes milliseconds; one that does not is given up (the records come again).
        self._commit_timeout = commit_timeout_seconds
        _quiet_commit_retries()
        self.role = consumer_role(group_id)
        self.ledger = BrokerLedger(self.role, "consumer")
        topics = list(self._handlers)
        self._topics = TopicKeeper(bootstrap_servers, [*topics, *map(dlq_topic, topics)])
        self._commit_failing: str | None = None
        # Set when the broker is found to have lost its log; see _reread_new_logs.
        self._log_lost = False
        self._last_poll_at: datetime | None = None
        self._last_commit_at: datetime | None = None
        self._bootstrap = bootstrap_servers
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        # Partition counts of the consumed topics when the client joined; see _tick.
        self._joined_counts: dict[str, int] = {}
        # The batch being applied (its transaction, then its offset commit) while the next
        # one is fetched and validated; see _process_topic.
        self._in_flight: asyncio.Task[None] | None = None
        self.rebalances = Rebalances()
        self.consumer = self._new_client()

    def _new_client(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            # How long a silent member keeps its partitions; the embedded broker also takes
            # about half of it to complete a join.
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=self._heartbeat_interval_ms,
            # A partition's fetch holds a whole batch of typical events (about 0.5 KiB
            # each, room for 2 KiB), so a batch fills from one partition when that is where
            # the backlog is; 4 MiB at the default batch size.
            max_partition_fetch_bytes=max(1 << 20, self._batch_size * 2048),
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        consumer.subscribe(list(self._handlers), listener=self.rebalances)
        return consumer

    async def run(self) -> None:
        await self._prepare()
        await self.consumer.start()
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        try:
            while True:
                _stop_if_cancelled()
                if not await self._turn():
                    # Nothing was waiting on any topic: finish the batch in flight, then
                    # wait (briefly) for whatever comes.
                    await self._settle()
                    fetched = await self.consumer.getmany(
                        timeout_ms=IDLE_WAIT_MS, max_records=self._batch_size
                    )
                    epoch = self.rebalances.count
                    for topic_batch in _by_topic(fetched):
                        await self._process_topic(topic_batch, epoch)
                self._last_poll_at = datetime.now(UTC)
                if loop.time() >= next_tick:
                    # The group, the heartbeat and the loss checks see applied batches only.
                    await self._settle()
                    if await self._tick():
                        await self._rejoin()
                    next_tick = loop.time() + self._tick_seconds
                if self._log_lost:
                    await self._settle()
                    await self._reread_new_logs()
        finally:
            # Stopped mid-batch: its transaction is rolled back and its offsets stay
            # uncommitted, as if it had never been fetched.
            if self._in_flight is not None:
                self._in_flight.cancel()
                # Bounded: a batch that lets the cancel pass must not keep the worker up.
                await asyncio.wait({self._in_flight}, timeout=STOP_WAIT_SECONDS)
                if not self._in_flight.done():
                    log.warning("the batch in flight did not stop; leaving it behind")
                elif not self._in_flight.cancelled():
                    self._in_flight.exception()  # retrieved: stopping is all that matters now
                self._in_flight = None
            await self.consumer.stop()

    async def _turn(self) -> bool:
        """One fetch per topic, from what the client has already fetched (no waiting), and
        that topic's batch applied: a month-end backlog of postings takes one batch a turn
        and an alert behind it waits for that one batch, not for the backlog. True when any
        topic had records."""
        assigned = self.consumer.assignment()
        any_records = False
        for topic in self._handlers:
            partitions = [tp for tp in assigned if tp.topic == topic]
            if not partitions:
                continue
            fetched = await self.consumer.getmany(
                *partitions, timeout_ms=0, max_records=self._batch_size
            )
            if fetched:
                any_records = True
                await self._process_topic(fetched, self.rebalances.count)
        return any_records

    async def _prepare(self) -> None:
        """Before joining the group: the topics as designed (waiting for the broker), and
        the broker positions saved by earlier runs (waiting for the database)."""
        failures: Counter[str] = Counter()
        while True:
            try:
                counts = await self._topics.ensure()
                if self._health is not None:
                    self.ledger.merge(await self._health.load_marks())
                self._joined_counts = self._consumed_counts(counts)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - at start, every failure is waited out
                cause = transient_cause(exc) or f"starting: {type(exc).__name__}"
                failures[cause] += 1
                if failures[cause] == 1:
                    log.warning("%s not ready (%s); waiting", self.role, exc)
                await asyncio.sleep(self._backoff(failures[cause]))

    def _check_log(self, partition: TopicPartition, first_offset: int) -> None:
        """A record below what this group committed means the broker's log was lost and
        started again (auto_offset_reset brought us to its start)."""
        loss = self.ledger.check(partition.topic, partition.partition, first_offset)
        if loss is not None:
            self._report(loss)

    async def _commit(self, last: Mapping[TopicPartition, ConsumerRecord[bytes, bytes]]) -> None:
        """Commit past each partition's `last` record in one call, bounded in time. aiokafka
        retries a retriable commit error forever (an unknown topic after a broker restart
        spun it for minutes); a failed or timed-out commit only means these records come
        again, which the inbox ignores."""
        try:
            async with asyncio.timeout(self._commit_timeout):
                await self.consumer.commit({tp: record.offset + 1 for tp, record in last.items()})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - no commit failure may stop the consumer
            if self._commit_failing is None:
                log.warning(
                    "offset commit of %s failed (%s: %s); carrying on, the records will be "
                    "redelivered and the inbox ignores them (logged once until commits work)",
                    ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(last)),
                    type(exc).__name__,
                    exc,
                )
            self._commit_failing = type(exc).__name__
            return
        if self._commit_failing is not None:
            log.info("offset commits work again")
            self._commit_failing = None
        self._last_commit_at = datetime.now(UTC)
        for tp, record in last.items():
            self.ledger.advance(tp.topic, tp.partition, record.offset + 1, _record_time(record))

    async def _tick(self) -> bool:
        """Topics as designed, lost logs of the assigned partitions, heartbeat. True when
        the client must join the group afresh."""
        broker = "ok"
        rejoin = False
        assigned = sorted(self.consumer.assignment())
        try:
            async with asyncio.timeout(self._broker_timeout):
                counts = self._consumed_counts(await self._topics.ensure())
                rejoin = self._partitions_changed(counts)
                for partition in assigned:
                    self._check_committed(partition, await self.consumer.committed(partition))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported in the heartbeat
            broker = f"unreachable: {type(exc).__name__}"
        if self._health is not None:
            await self._beat(broker, assigned)
        return rejoin

    async def _beat(self, broker: str, assigned: list[TopicPartition]) -> None:
        assert self._health is not None
        detail = {
            "kind": "consumer",
            "group": self._group_id,
            "broker": broker,
            "assignment": [f"{tp.topic}/{tp.partition}" for tp in assigned],
            # From the high watermarks of the last fetches: records not yet applied.
            "lag": {
                f"{tp.topic}/{tp.partition}": max(highwater - self._committed(tp), 0)
                for tp in assigned
                if (highwater := self.consumer.highwater(tp)) is not None
            },
            "last_poll_at": _iso(self._last_poll_at),
            "last_commit_at": _iso(self._last_commit_at),
            "commits_failing": self._commit_failing,
        }
        try:
            await self._health.beat(detail, self.ledger)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the next tick tries again
            log.warning("could not save the %s heartbeat: %s", self.role, type(exc).__name__)

    def _consumed_counts(self, counts: Mapping[str, int]) -> dict[str, int]:
        return {topic: counts[topic] for topic in self._handlers if topic in counts}

    def _partitions_changed(self, counts: dict[str, int]) -> bool:
        """A consumed topic now has another partition count than when we joined (after a
        broker restart a producer auto-created it with four). aiokafka asks for a
        rebalance then, but drops the request when a rebalance is already under way, and
        the embedded broker hands a member that rejoins its old assignment: partition 3
        went unread for seven minutes. Joining afresh is what works on both."""
        changed = {
            topic: (self._joined_counts[topic], count)
            for topic, count in counts.items()
            if topic in self._joined_counts and self._joined_counts[topic] != count
        }
        self._joined_counts = {**self._joined_counts, **counts}
        if changed:
            log.warning(
                "partitions changed (%s); joining the group afresh so every partition is read",
                ", ".join(f"{t}: {old} -> {new}" for t, (old, new) in sorted(changed.items())),
            )
        return bool(changed)

    async def _rejoin(self) -> None:
        """Leave the group and join it with a new client. Offsets of applied batches are
        committed already; anything else is redelivered, which the inbox ignores."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._broker_timeout):
                await self.consumer.stop()
        attempt = 0
        while True:
            self.consumer = self._new_client()
            try:
                await self.consumer.start()
                return
            except KafkaError as exc:
                attempt += 1
                log.warning("could not join %s again (%s); retrying", self._group_id, exc)
                await asyncio.sleep(self._backoff(attempt))

    def _check_committed(self, partition: TopicPartition, committed: int | None) -> None:
        """The broker keeps our commits; none, or one below what we committed, means it
        lost its state (and with it the records we had not read yet), even if no record
        has arrived since to show it. The log's end offset is no help: the embedded broker
        reports the first offset of the last batch there."""
        loss = self.ledger.check(partition.topic, partition.partition, committed or 0)
        if loss is not None:
            self._report(loss)

    def _committed(self, partition: TopicPartition) -> int:
        mark = self.ledger.marks.get((partition.topic, partition.partition))
        return mark.next_offset if mark else 0

    async def _reread_new_logs(self) -> None:
        """The broker lost its log (a restart of the embedded one): read every assigned
        partition again from the start of the new log. Our fetch positions survived the
        restart, and where the new log had grown past them before we fetched, the records
        below them would otherwise be skipped for good: postings produced after the restart,
        never applied. A loss on one partition means the whole broker's was lost, so every
        partition is re-read, and each one's loss is reported now (its mark restarts at 0,
        so the re-reading is not taken for another loss). The inbox makes it harmless."""
        self._log_lost = False
        assigned = sorted(self.consumer.assignment())
        for partition in assigned:
            loss = self.ledger.check(partition.topic, partition.partition, 0)
            if loss is not None:
                self._report(loss)
        self._log_lost = False
        if not assigned:
            return
        log.warning(
            "reading %d partitions again from the start of the broker's new log", len(assigned)
        )
        try:
            await self.consumer.seek_to_beginning(*assigned)
        except KafkaError as exc:
            # The assignment moved meanwhile; the new one starts from the broker's commits.
            log.warning("could not re-read from the start (%s); the rebalance will", exc)

    def _report(self, loss: Loss) -> None:
        self._log_lost = True
        if self._health is not None:
            self._health.report(loss)
        else:
            log.error("%s. To repair: %s", loss.describe(), loss.remedy(None))

    async def _process_topic(
        self, batch: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]], epoch: int
    ) -> None:
        """Apply one topic's fetched records (every partition's, each in its order) as one
        batch, then commit the offsets of all those partitions at once: an offset moves only
        once every record's effect below it is committed in the database."""
        for partition, records in batch.items():
            self._check_log(partition, records[0].offset)
        # Parsing and validating is the consumer's own CPU; it runs while the batch before
        # is in the database. That batch is applied and committed before this one starts,
        # so each partition's events still apply in their order, one batch at a time.
        deliveries, unreadable = await self._validate(batch)
        await self._settle()
        if self.rebalances.count != epoch:
            _log_stale(batch)
            return
        self._in_flight = asyncio.create_task(self._apply(batch, deliveries, unreadable, epoch))

    async def _apply(
        self,
        batch: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        deliveries: list[Delivery],
        unreadable: int,
        epoch: int,
    ) -> None:
        tally = await self._applier.apply(deliveries)
        if self.rebalances.count == epoch:
            await self._commit({partition: records[-1] for partition, records in batch.items()})
        else:
            # Applied (the inbox has it), but the partitions were handed round meanwhile.
            _log_stale(batch, applied=True)
        self._log_batch(batch, tally, unreadable)

    async def _settle(self) -> None:
        """Wait until the batch in flight is applied and its offsets committed; what it
        raised is raised here."""
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await task
            _stop_if_cancelled()

    async def _validate(
        self, batch: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> tuple[list[Delivery], int]:
        """The batch's events, validated against the topic's model; what does not validate
        is dead-lettered with the reason. An event twice in one batch is kept once, as a
        redelivery would be."""
        deliveries: list[Delivery] = []
        seen: set[uuid.UUID] = set()
        unreadable = 0
        for records in batch.values():
            model = self._handlers[records[0].topic].model
            for n, record in enumerate(records, 1):
                if n % YIELD_EVERY == 0:
                    # Let the batch in flight read its answers from the database meanwhile.
                    await asyncio.sleep(0)
                try:
                    event = model.model_validate_json(record.value or b"")
                except (ValidationError, ValueError) as exc:
                    unreadable += 1
                    await self._dead_letters.send(record, _describe(exc))
                    continue
                if event.event_id not in seen:
                    seen.add(event.event_id)
                    deliveries.append(Delivery(record, event))
        return deliveries, unreadable

    async def _transact(self, batch: Sequence[Delivery]) -> int:
        """The inbox claim and the effect of the fresh events, in one transaction; how many
        were fresh. A batch holds one topic's records."""
        async with unit_of_work(self._sessions) as session:
            topic = batch[0].record.topic
            fresh = await inbox.claim_batch(
                session, self._inbox, [d.event.event_id for d in batch], topic
            )
            # A batch's ids are distinct (see _validate): all fresh is the usual case.
            if len(fresh) == len(batch):
                events = [d.event for d in batch]
            else:
                events = [d.event for d in batch if d.event.event_id in fresh]
            if events:
                await self._handlers[topic].apply(session, events)
            return len(events)

    def _log_batch(
        self,
        batch: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        tally: Tally,
        unreadable: int,
    ) -> None:
        """One line per batch (ids and counts only, never an event's content): INFO when
        something other than plain applying happened, DEBUG otherwise."""
        eventful = tally.duplicates or tally.dead_lettered or tally.splits or unreadable
        level = logging.INFO if eventful else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        topic = next(iter(batch)).topic
        log.log(
            level,
            "group %s, %s: %d records from partitions %s: %d applied, %d duplicates ignored, "
            "%d dead-lettered (%d unreadable), %d transactions (%d splits, %d transient retries)",
            self._group_id,
            topic,
            sum(len(records) for records in batch.values()),
            ",".join(str(tp.partition) for tp in sorted(batch)),
            tally.applied,
            tally.duplicates,
            tally.dead_lettered + unreadable,
            unreadable,
            tally.transactions,
            tally.splits,
            tally.transient_retries,
        )

    def _backoff(self, attempt: int) -> float:
        return backoff_seconds(attempt, base=self._retry_seconds, cap=self._max_retry_seconds)


def _stop_if_cancelled() -> None:
    """Raise the cancellation of this task if an await let it pass. Cancelling a task that
    waits for another cancels the other instead; when that one swallows it (a library's
    `wait_for` finishing at the same moment, on Python 3.11), the waiting task carries on
    with the cancel still requested, and whoever stops the consumer waits forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        log.warning("a cancel of the consumer was not raised where it arrived; stopping now")
        raise asyncio.CancelledError


def _log_stale(
    batch: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]], *, applied: bool = False
) -> None:
    log.info(
        "%s: %d records from partitions %s fetched before a rebalance: %s; they come again "
        "from the committed offset to whoever reads them now",
        next(iter(batch)).topic,
        sum(len(records) for records in batch.values()),
        ",".join(str(tp.partition) for tp in sorted(batch)),
        "applied, offsets not committed" if applied else "not applied",
    )


def _by_topic(
    fetched: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
) -> list[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]:
    """Records fetched from several topics, one batch per topic."""
    topics: dict[str, dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] = {}
    for tp, records in fetched.items():
        if records:
            topics.setdefault(tp.topic, {})[tp] = records
    return list(topics.values())


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and any(e["type"] == "json_invalid" for e in exc.errors()):
        return f"unparseable event: {exc.errors()[0]['msg']}"
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        ]
        return "invalid event: " + "; ".join(parts)
    return f"unparseable event: {exc}"


def _record_time(record: ConsumerRecord[bytes, bytes]) -> datetime | None:
    if record.timestamp is None or record.timestamp < 0:
        return None
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
