"""Kafka plumbing: producer factory and the at-least-once consumer loop.

The loop validates each record against its topic's model, applies it in one database
transaction together with the inbox row, and commits the Kafka offset only after that
transaction has committed. What cannot be parsed or validated goes to `<topic>.dlq` with
the reason; transient failures (database, broker, another service down) are retried and
never skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError
from pydantic import ValidationError
from sqlalchemy import Table
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import inbox
from shared.db import unit_of_work
from shared.events import EventEnvelope, dlq_topic, parse_event
from shared.logging import bind_event
from shared.service_client import OwnerUnavailable

log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Any], Awaitable[None]]


class InvalidEvent(Exception):
    """The event is well-formed but cannot be applied (e.g. refers to nothing we know).
    It goes to the dead-letter topic instead of blocking the partition."""


def make_producer(bootstrap_servers: str) -> AIOKafkaProducer:
    # Tansu has no idempotent producer; the outbox and inbox give exactly-once effects.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
    )


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
    ) -> None:
        self._group_id = group_id
        self._handlers = dict(handlers)
        self._sessions = sessions
        self._inbox = inbox_table
        self._producer = producer
        self._max_attempts = max_attempts
        self._retry_seconds = retry_seconds
        self.consumer = AIOKafkaConsumer(
            *self._handlers,
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )

    async def run(self) -> None:
        await self.consumer.start()
        try:
            while True:
                batch = await self.consumer.getmany(timeout_ms=500, max_records=200)
                for partition, records in batch.items():
                    await self._process_batch(records)
                    # The offset moves only once every record's effect is committed.
                    try:
                        await self.consumer.commit({partition: records[-1].offset + 1})
                    except (CommitFailedError, IllegalStateError, RebalanceInProgressError):
                        # The partition moved to another member during a rebalance; it will
                        # redeliver these records and the inbox makes that harmless.
                        log.warning("offset commit lost to a rebalance of %s", partition)
        finally:
            await self.consumer.stop()

    async def _process_batch(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply a partition's batch in one transaction, so the commit (an fsync) is paid
        per batch rather than per event. If any event fails, nothing of the batch is kept
        and its events are applied again one transaction each, where a bad event is
        dead-lettered alone and transient failures are retried."""
        valid: list[tuple[ConsumerRecord[bytes, bytes], EventEnvelope]] = []
        for record in records:
            try:
                valid.append((record, parse_event(record.topic, record.value or b"")))
            except (ValidationError, ValueError) as exc:
                await self._dead_letter(record, _describe(exc))
        if not valid:
            return
        try:
            async with unit_of_work(self._sessions) as session:
                for record, event in valid:
                    with bind_event(event_id=str(event.event_id), loan_id=event.loan_id):
                        await self._apply(session, record.topic, event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure takes the careful path
            log.info("batch of %d not applied (%s); applying one by one", len(valid), exc)
            for record, event in valid:
                await self._process_one(record, event)

    async def _process_one(
        self, record: ConsumerRecord[bytes, bytes], event: EventEnvelope
    ) -> None:
        with bind_event(event_id=str(event.event_id), loan_id=event.loan_id):
            attempt = 0
            while True:
                attempt += 1
                try:
                    async with unit_of_work(self._sessions) as session:
                        await self._apply(session, record.topic, event)
                    return
                except InvalidEvent as exc:
                    await self._dead_letter(record, str(exc))
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if _is_transient(exc):
                        # Owner service or database down: retry for as long as it takes.
                        log.warning("transient failure applying event, retrying: %s", exc)
                        await asyncio.sleep(min(self._retry_seconds * attempt, 10.0))
                        continue
                    if attempt >= self._max_attempts:
                        log.exception("giving up on event after %d attempts", attempt)
                        await self._dead_letter(record, f"handler failed: {exc!r}")
                        return
                    log.exception("event handler failed (attempt %d)", attempt)
                    await asyncio.sleep(self._retry_seconds * attempt)

    async def _apply(self, session: AsyncSession, topic: str, event: EventEnvelope) -> None:
        """The effect and the inbox row, in the caller's transaction."""
        if not await inbox.claim(session, self._inbox, event.event_id, topic):
            log.info("duplicate event ignored")
            return
        await self._handlers[topic](session, event)

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        raw = (record.value or b"").decode("utf-8", errors="replace")
        dead = {
            "reason": reason,
            "source_topic": record.topic,
            # Several groups consume one topic; each dead-letters its own copy.
            "consumer_group": self._group_id,
            "partition": record.partition,
            "offset": record.offset,
            "failed_at": datetime.now(UTC).isoformat(),
            "payload": raw,
        }
        log.warning("event sent to dead-letter topic: %s", reason)
        await self._producer.send_and_wait(
            dlq_topic(record.topic),
            value=json.dumps(dead, ensure_ascii=False).encode(),
            key=record.key,
            headers=[("reason", reason[:1000].encode())],
        )


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


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | OwnerUnavailable | httpx.TransportError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # OSError covers ConnectionError and TimeoutError (sockets to the broker or an owner).
    return isinstance(exc, OSError)
