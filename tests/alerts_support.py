"""Helpers of the alerts tests: loan facts as the scheduler announces them, the park, and
the parking sweep run on demand."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from services.alerts.parking import ParkingSweep
from shared.db import make_engine, make_session_factory
from shared.dead_letter_sender import DeadLetterSender
from tests.support import fetchval


def loan_registered_event(
    loan_id: str,
    *,
    agreed_usage: str = "private",
    region: str = "R-test",
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """A `loan-registered` event as the scheduler publishes it, made by the test itself: the
    alerts service must not care who produced it (the scheduler may well be down)."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "loan-registered",
        "schema_version": 1,
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        "loan_id": loan_id,
        "region": region,
        "credit_grade": "C",
        "agreed_usage": agreed_usage,
        "principal": "80000.00",
        "term_months": 36,
        "disbursed_on": "2026-10-15",
        "valuation": "98000.00",
        "ltv": "0.8163",
    }


async def parked_count(database_url: str, event_id: str) -> int:
    sql = "SELECT count(*) FROM alerts.parked_events WHERE event_id = $1::uuid"
    return int(await fetchval(database_url, sql, event_id))


async def claimed(database_url: str, event_id: str) -> bool:
    sql = "SELECT count(*) FROM alerts.inbox WHERE event_id = $1::uuid"
    return bool(await fetchval(database_url, sql, event_id))


@asynccontextmanager
async def parking_sweep(
    database_url: str, producer: AIOKafkaProducer, *, grace: timedelta
) -> AsyncIterator[ParkingSweep]:
    """The alerts worker's sweep with its own grace, dead-lettering as the `alerts` group."""
    engine = make_engine(database_url)
    try:
        dead_letters = DeadLetterSender(producer, "alerts", lambda attempt: 0.2)
        yield ParkingSweep(
            make_session_factory(engine), dead_letters, grace=grace, every_seconds=1.0
        )
    finally:
        await engine.dispose()
