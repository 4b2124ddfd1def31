"""The parking sweep: what becomes of events parked waiting for their loan's facts.

A posting or visit whose loan has no facts yet is parked (services/alerts/service.py) and
applied when the loan's `loan-registered` is projected. The sweep, run periodically by the
alerts worker, handles the two other ends:

- a parked event whose loan has facts by now (parked while another transaction was
  projecting them) is applied;
- a parked event whose loan is still unknown after the grace period goes to `<topic>.dlq`
  with the reason the scheduler gives and leaves the park and the inbox, so ops can replay it
  once origination registers the loan.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

from aiokafka import ConsumerRecord
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alerts import repository, service
from services.alerts.models import ParkedEvent
from shared.broker_ledger import BrokerLedger
from shared.db import unit_of_work
from shared.dead_letter_sender import DeadLetterSender
from shared.health import WorkerHealth

log = logging.getLogger(__name__)

# The heartbeat role of the sweep (not a readiness check: a sweep that lags only delays
# dead letters).
PARKING_ROLE = "parking:alerts"
# A dead letter from the park has no broker position; it says so with this partition and
# gives the park sequence number as its offset, which keeps each one distinct for a replay.
PARKED_PARTITION = -1


def unregistered(loan_id: str) -> str:
    """The reason an event about a loan nobody registered is refused, the scheduler's words."""
    return f"loan {loan_id} is not registered with the scheduler"


class ParkingSweep:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        dead_letters: DeadLetterSender,
        *,
        grace: timedelta,
        every_seconds: float,
        batch_size: int = 500,
        health: WorkerHealth | None = None,
    ) -> None:
        self._sessions = sessions
        self._dead_letters = dead_letters
        self._grace = grace
        self._every = every_seconds
        self._batch_size = batch_size
        self._health = health
        self._ledger = BrokerLedger(PARKING_ROLE, "consumer")
        self.dead_lettered = 0

    async def release_known(self) -> int:
        """Apply parked events whose loans have facts by now; returns how many."""
        released = 0
        while True:
            async with unit_of_work(self._sessions) as session:
                parked = await repository.unpark_known(session, self._batch_size)
                await service.apply_parked(session, parked)
            released += len(parked)
            if len(parked) < self._batch_size:
                return released

    async def expire(self) -> int:
        """Dead-letter the events parked longer than the grace whose loans are still
        unknown, and take them out of the park; returns how many."""
        expired = 0
        while True:
            async with unit_of_work(self._sessions) as session:
                # One sweeper at a time, as one relay per outbox: two would send the same
                # dead letters. The rows stay parked until their dead letters are sent and
                # the deletion commits; if the broker is down longer than the database lets
                # a transaction idle, the deletion fails and the next round sends them
                # again. Their source (topic, -1, park number) is the same each time, so a
                # replay still applies each one once.
                lock = func.pg_try_advisory_xact_lock(func.hashtext("alerts.parked_events"))
                if not (await session.execute(select(lock))).scalar_one():
                    return expired
                cutoff = datetime.now(UTC) - self._grace
                parked = await repository.expired_parked(session, cutoff, self._batch_size)
                for row in parked:
                    await self._dead_letters.send(_as_record(row), _reason(row, self._grace))
                await repository.drop_dead_lettered(session, parked)
            expired += len(parked)
            self.dead_lettered += len(parked)
            if len(parked) < self._batch_size:
                return expired

    async def sweep(self) -> None:
        released = await self.release_known()
        expired = await self.expire()
        if released or expired:
            log.info("parking sweep: %d parked events applied, %d dead-lettered", released, expired)

    async def beat(self) -> None:
        """The number of parked events and the age of the oldest, in the heartbeat."""
        if self._health is None:
            return
        async with self._sessions() as session:
            count, oldest = await repository.parked_count(session)
        detail = {
            "kind": "parking",
            "parked": count,
            "oldest_parked_seconds": oldest.total_seconds() if oldest else None,
            "grace_seconds": self._grace.total_seconds(),
            "dead_lettered": self.dead_lettered,
        }
        await self._health.beat(detail, self._ledger)

    async def run(self) -> None:
        while True:
            for step in (self.sweep, self.beat):
                try:
                    await step()
                except asyncio.CancelledError:
                    raise
                except Exception:  # the next round tries again
                    # The database or the broker is down; parked rows stay where they are.
                    log.exception("parking sweep failed; retrying in %.0fs", self._every)
            await asyncio.sleep(self._every)


def _reason(row: ParkedEvent, grace: timedelta) -> str:
    waited = int(grace.total_seconds())
    return (
        f"{unregistered(row.loan_id)} (parked since {row.parked_at.isoformat()}, {waited}s grace)"
    )


def _as_record(row: ParkedEvent) -> ConsumerRecord[bytes, bytes]:
    """The parked event as the record it came in (its JSON as the model kept it, keyed by
    its loan), for the dead-letter sender."""
    value = json.dumps(row.payload, separators=(",", ":"), ensure_ascii=False).encode()
    key = row.loan_id.encode()
    return ConsumerRecord(
        topic=row.topic,
        partition=PARKED_PARTITION,
        offset=row.id or 0,
        timestamp=int(row.parked_at.timestamp() * 1000),
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=[],
    )
