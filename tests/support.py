"""Helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import Role, issue_token
from shared.events import EventEnvelope
from shared.kafka import TopicHandler
from shared.settings import DEV_JWT_SECRET

T = TypeVar("T")
E = TypeVar("E", bound=EventEnvelope)


def auth(role: Role, sub: str = "tester", secret: str = DEV_JWT_SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(secret, sub, role)}"}


def supervisor(region: str, sub: str = "sup-1") -> dict[str, str]:
    """A supervisor of `region` (the claim a supervisor's token carries)."""
    return {
        "Authorization": f"Bearer {issue_token(DEV_JWT_SECRET, sub, 'supervisor', region=region)}"
    }


ADMIN = auth("admin", "root")
CORE_BANKING = auth("integration", "core-banking")


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


async def register_agent(
    client: httpx.AsyncClient, region: str, *, methods: list[str] | None = None
) -> str:
    """A new agent in `region` (phone and field unless `methods` says otherwise); its id."""
    agent_id = new_id("AG")
    response = await client.put(
        f"/v1/agents/{agent_id}",
        json={
            "name": "李娜",
            "region": region,
            "methods": methods or ["phone", "field"],
            "daily_capacity": 8,
        },
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    return agent_id


async def register_loan(client: httpx.AsyncClient, region: str, **loan_kwargs: Any) -> str:
    """A new loan registered by core banking (`loan_body` with `loan_kwargs`); its id."""
    loan_id = new_id("L")
    response = await client.put(
        f"/v1/loans/{loan_id}",
        json=loan_body(region=region, **loan_kwargs),
        headers=CORE_BANKING,
    )
    assert response.status_code == 201, response.text
    return loan_id


# What an agent records on a clean visit; a visit that did not happen leaves the defaults.
# Copy it (`{**CLEAN_FINDINGS, ...}`) rather than changing it.
CLEAN_FINDINGS: dict[str, Any] = {
    "identity_verified": True,
    "employment_status": "stable",
    "income_change": "same",
    "vehicle_sighted": True,
    "vehicle_usage": "private",
    "vehicle_condition": "good",
    "collateral_documents_intact": True,
    "encumbrance_detected": False,
    "repayment_difficulty": False,
}

# The same on a phone call, which cannot see the car (issue 7, capture rules).
PHONE_FINDINGS: dict[str, Any] = {**CLEAN_FINDINGS, "vehicle_sighted": None}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(label: str = "") -> bytes:
    """A valid 1x1 PNG; `label` (kept in a tEXt chunk) makes its bytes, and so its SHA-256,
    one's own: evidence is idempotent on the bytes per uploader."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixel = zlib.compress(b"\x00\x80\x80\x80")  # filter byte, one grey pixel
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"tEXt", b"Comment\x00" + (label or uuid.uuid4().hex).encode())
        + _png_chunk(b"IDAT", pixel)
        + _png_chunk(b"IEND", b"")
    )


async def upload_photo(
    visits: httpx.AsyncClient, headers: Mapping[str, str], data: bytes | None = None
) -> str:
    """Upload a photo of the car (a new PNG unless `data`) as `headers`' caller; its id."""
    response = await visits.post(
        "/v1/evidence",
        content=data if data is not None else png(),
        headers={**headers, "Content-Type": "image/png"},
    )
    assert response.status_code == 201, response.text
    evidence_id: str = response.json()["evidence_id"]
    return evidence_id


def _envelope(event_type: str, loan_id: str, occurred_at: datetime) -> dict[str, Any]:
    """The fields every event carries (shared/events: EventEnvelope), with a new event_id."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": occurred_at.isoformat(),
        "loan_id": loan_id,
    }


def repayment_event(
    loan_id: str,
    *,
    status: str = "missed",
    days_past_due: int,
    installment_no: int = 1,
    amount_due: str = "2800.00",
    amount_paid: str | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """A `repayment-posted` event as core banking sends it. The installment fell due
    `days_past_due` days before `occurred_at` (default now); unless given, nothing is paid
    on a missed one, half on a partial one and all on a paid one."""
    posted = occurred_at or datetime.now(UTC)
    if amount_paid is None:
        paid = {"paid": Decimal(amount_due), "partial": Decimal(amount_due) / 2}
        amount_paid = str(paid.get(status, Decimal("0.00")))
    return {
        **_envelope("repayment-posted", loan_id, posted),
        "installment_no": installment_no,
        "due_date": (posted.date() - timedelta(days=days_past_due)).isoformat(),
        "amount_due": amount_due,
        "amount_paid": amount_paid,
        "paid_at": posted.isoformat() if status in ("paid", "partial") else None,
        "status": status,
        "days_past_due": days_past_due,
        "outstanding_principal": "70000.00",
    }


def visit_event(
    loan_id: str,
    *,
    outcome: str = "completed",
    findings: Mapping[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """A `visit-completed` event of an unplanned 40-minute field visit that ended at
    `occurred_at` (default now): `CLEAN_FINDINGS` when it was completed (none otherwise),
    overridden by `findings`."""
    ended = occurred_at or datetime.now(UTC)
    seen = CLEAN_FINDINGS if outcome == "completed" else {}
    return {
        **_envelope("visit-completed", loan_id, ended),
        "visit_id": str(uuid.uuid4()),
        "task_id": None,
        "agent_id": "AG-field-1",
        "method": "field",
        "outcome": outcome,
        "started_at": (ended - timedelta(minutes=40)).isoformat(),
        "ended_at": ended.isoformat(),
        "findings": {**seen, **(findings or {})},
    }


async def produce(producer: AIOKafkaProducer, event: Mapping[str, Any]) -> None:
    """Send `event` as JSON to the topic named by its `event_type`, keyed by its loan: the
    events of one loan share a partition and are applied in order."""
    await producer.send_and_wait(
        str(event["event_type"]), json.dumps(event).encode(), key=str(event["loan_id"]).encode()
    )


@asynccontextmanager
async def _connection(database_url: str) -> AsyncIterator[Any]:
    """A one-off asyncpg connection to the database at `database_url` (a SQLAlchemy URL)."""
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        yield conn
    finally:
        await conn.close()


async def fetchval(database_url: str, sql: str, *args: Any) -> Any:
    """The first value of the first row of `sql`, on a one-off connection."""
    async with _connection(database_url) as conn:
        return await conn.fetchval(sql, *args)


async def execute(database_url: str, script: str) -> None:
    """Run `script` (statements separated by semicolons, no parameters) in one session."""
    async with _connection(database_url) as conn:
        await conn.execute(script)


async def fetchrow(database_url: str, sql: str, *args: Any) -> Any:
    """The first row of `sql` (an asyncpg Record, or None), on a one-off connection."""
    async with _connection(database_url) as conn:
        return await conn.fetchrow(sql, *args)


async def read_topic(
    bootstrap: str, topic: str, match: Callable[[dict[str, Any]], bool], *, within: float = 30.0
) -> dict[str, Any]:
    """Read `topic` from the start until a JSON record satisfies `match` (others skipped)."""
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
                    try:
                        value = json.loads(record.value or b"null")
                    except ValueError:
                        continue  # other tests put garbage on topics on purpose
                    if isinstance(value, dict) and match(value):
                        return value
        raise AssertionError(f"no matching record on {topic} within {within}s")
    finally:
        await consumer.stop()


def each_event(
    model: type[E], handle: Callable[[AsyncSession, E], Awaitable[None]]
) -> TopicHandler[E]:
    """A topic handler applying a batch's events one after another with a per-event test
    handler: the consumer tests are about delivery, not about set-based effects."""

    async def apply(session: AsyncSession, events: Sequence[E]) -> None:
        for event in events:
            await handle(session, event)

    return TopicHandler(model, apply)


async def dispatched(
    client: httpx.AsyncClient, loan_id: str, *, within: float = 15.0
) -> list[dict[str, Any]]:
    """The loan's tasks once every open one has its agent: planning writes tasks without
    one and the scheduler worker's dispatcher assigns them (within a second or so)."""

    async def assigned() -> list[dict[str, Any]] | None:
        response = await client.get(f"/v1/loans/{loan_id}/tasks", headers=ADMIN)
        assert response.status_code == 200, response.text
        tasks: list[dict[str, Any]] = response.json()["items"]
        ready = tasks and all(t["agent_id"] for t in tasks if t["status"] == "open")
        return tasks if ready else None

    return await eventually(assigned, within=within, interval=0.05)
