"""Helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer

from shared.auth import Role, issue_token
from shared.settings import DEV_JWT_SECRET

T = TypeVar("T")


def auth(role: Role, sub: str = "tester", secret: str = DEV_JWT_SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(secret, sub, role)}"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 30.0, interval: float = 0.2
) -> T:
    """Poll until `probe` returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s; last value: {last!r}")


def loan_body(
    *,
    region: str,
    grade: str = "C",
    disbursed_on: date = date(2026, 10, 15),
    agreed_usage: str = "private",
) -> dict[str, Any]:
    return {
        "borrower": {
            "borrower_id": new_id("B"),
            "name": "王建国",
            "national_id": "110101199003074512",
            "phone": "13812345678",
            "occupation": "driver",
            "monthly_income": "12000.00",
        },
        "vehicle": {
            "vin": "LSVAU2180N2183294",
            "plate": "京A12345",
            "make_model": "BYD Qin Plus",
            "valuation": "98000.00",
            "valued_on": "2026-10-10",
        },
        "credit_grade": grade,
        "principal": "80000.00",
        "term_months": 36,
        "disbursed_on": disbursed_on.isoformat(),
        "region": region,
        "agreed_usage": agreed_usage,
    }


async def read_topic(
    bootstrap: str, topic: str, match: Callable[[dict[str, Any]], bool], *, within: float = 30.0
) -> dict[str, Any]:
    """Read `topic` from the start until a JSON record satisfies `match`."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for record in records:
                    value = json.loads(record.value or b"null")
                    if isinstance(value, dict) and match(value):
                        return value
        raise AssertionError(f"no matching record on {topic} within {within}s")
    finally:
        await consumer.stop()
