"""Sending dead letters (`shared.dead_letters` builds them): a broker outage is waited out,
a record the broker refuses for good is sent again without its payload, and if even that is
refused the consumer is told where the record is and goes on. One record never stops a
consumer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord

from shared import dead_letters
from shared.events import dlq_topic
from shared.failures import transient_cause

log = logging.getLogger(__name__)


class DeadLetterSender:
    """Dead letters of one consumer group, through the worker's producer."""

    def __init__(
        self, producer: AIOKafkaProducer, group_id: str, backoff: Callable[[int], float]
    ) -> None:
        self._producer = producer
        self._group_id = group_id
        self._backoff = backoff

    async def send(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        """Send the record's dead letter to `<topic>.dlq`; never raises but for cancellation."""
        source = dead_letters.Source(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
        )
        where = f"{record.topic}/{record.partition}@{record.offset}"
        log.warning("event %s sent to dead-letter topic: %s", where, reason[:500])
        for keep_payload in (True, False):
            dead = dead_letters.build(
                source, group=self._group_id, reason=reason, keep_payload=keep_payload
            )
            try:
                await self._send(record, dead)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - never lets one record stop the loop
                log.error(
                    "dead letter of %s refused by the broker (%s: %s)%s",
                    where,
                    type(exc).__name__,
                    exc,
                    "; sending it without its payload" if keep_payload else "",
                )
        log.error(
            "could not dead-letter %s (group %s, %d bytes); skipped, it stays readable at "
            "that offset until the broker's retention removes it",
            where,
            self._group_id,
            len(record.value or b""),
        )

    async def _send(self, record: ConsumerRecord[bytes, bytes], dead: dict[str, Any]) -> None:
        """Retries while the broker is unreachable; raises what retrying cannot fix."""
        attempt = 0
        while True:
            try:
                await self._producer.send_and_wait(
                    dlq_topic(record.topic),
                    value=dead_letters.encode(dead),
                    key=dead_letters.dlq_key(record.key),
                    headers=[("reason", str(dead["reason"])[:1000].encode())],
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if transient_cause(exc) is None:
                    raise
                attempt += 1
                delay = self._backoff(attempt)
                log.warning("dead-letter topic unreachable (%s), retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
