"""Core banking as the fault suite plays it: it registers loans and agents over REST, then
posts repayments to `repayment-posted` with a raw aiokafka producer at a steady rate,
sending again whatever the broker did not acknowledge (as a real integration would)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from tests.support import ADMIN, CORE_BANKING, loan_body, repayment_event

log = logging.getLogger("faults.core_banking")

REGIONS = ("SH", "BJ", "GZ", "SZ")
AGENTS_PER_REGION = 2
IMPORT_CHUNK = 10_000  # the scheduler's limit per import request
# Missed installments cycle through these days past due: a missed-installment alert (the
# scheduler then plans a call from alert-raised), an M1 and an M3 escalation.
MISSED_DAYS_PAST_DUE = (5, 35, 95)


@dataclass(frozen=True)
class Posting:
    event_id: str
    loan_id: str
    missed: bool
    value: bytes


def loan_ids(count: int) -> list[str]:
    return [f"L-FLT-{n:06d}" for n in range(1, count + 1)]


def postings(loans: list[str], count: int, missed_share: float = 0.2) -> list[Posting]:
    """`count` postings spread over `loans`, installment by installment (a loan's next
    installment comes a whole round later, as month-end runs do); every
    1/`missed_share`-th one missed."""
    every = round(1 / missed_share)
    made: list[Posting] = []
    for n in range(count):
        loan_id = loans[n % len(loans)]
        missed = n % every == 0
        days_past_due = MISSED_DAYS_PAST_DUE[(n // every) % len(MISSED_DAYS_PAST_DUE)]
        event = repayment_event(
            loan_id,
            status="missed" if missed else "paid",
            days_past_due=days_past_due if missed else 0,
            installment_no=1 + n // len(loans),
        )
        made.append(Posting(event["event_id"], loan_id, missed, json.dumps(event).encode()))
    return made


async def register(scheduler: httpx.AsyncClient, loans: list[str]) -> None:
    """Agents in every region, then the loans through the NDJSON import."""
    for region in REGIONS:
        for n in range(1, AGENTS_PER_REGION + 1):
            response = await scheduler.put(
                f"/v1/agents/AG-FLT-{region}-{n}",
                json={
                    "name": "李娜",
                    "region": region,
                    "methods": ["phone", "field"],
                    "daily_capacity": 40,
                },
                headers=ADMIN,
            )
            response.raise_for_status()
    disbursed = datetime.now(UTC).date() - timedelta(days=120)
    for start in range(0, len(loans), IMPORT_CHUNK):
        lines = [
            json.dumps({"loan_id": loan_id, **_loan(n, disbursed)})
            for n, loan_id in enumerate(loans[start : start + IMPORT_CHUNK], start=start)
        ]
        response = await scheduler.post(
            "/v1/loans/import",
            content="\n".join(lines).encode(),
            headers=CORE_BANKING | {"content-type": "application/x-ndjson"},
        )
        response.raise_for_status()
        if response.json()["accepted"] != len(lines):
            raise RuntimeError(f"loan import took {response.json()} of {len(lines)} lines")


def _loan(n: int, disbursed: date) -> dict[str, Any]:
    return loan_body(region=REGIONS[n % len(REGIONS)], grade="ABCDE"[n % 5], disbursed_on=disbursed)


@dataclass
class Stream:
    """Postings sent so far: when each was last handed to the producer, and when the broker
    acknowledged it (monotonic seconds)."""

    acked_at: dict[str, float] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)
    resent: int = 0
    finished_at: float | None = None

    def acked_after(self, moment: float) -> set[str]:
        """Sent after `moment` and acknowledged: produced to whatever broker was up then."""
        return {e for e in self.acked_at if self.sent_at.get(e, self.acked_at[e]) >= moment}

    def acked_before(self, moment: float) -> set[str]:
        return {event_id for event_id, at in self.acked_at.items() if at < moment}


async def post_repayments(
    bootstrap: str, planned: list[Posting], stream: Stream, *, rate: float, within: float
) -> None:
    """Send `planned` at about `rate` per second until the broker has acknowledged every
    one; what fails (the broker gone, a timeout) is sent again. Gives up after `within`."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=False,
        acks="all",
        linger_ms=5,
        # Short, so that a dead broker fails a batch quickly and it is sent again.
        request_timeout_ms=5_000,
        retry_backoff_ms=200,
    )
    await producer.start()
    try:
        await _send_all(producer, planned, stream, rate=rate, within=within)
    finally:
        await producer.stop()
    stream.finished_at = time.monotonic()


async def _send_all(
    producer: AIOKafkaProducer,
    planned: list[Posting],
    stream: Stream,
    *,
    rate: float,
    within: float,
) -> None:
    to_send: deque[Posting] = deque(planned)
    in_flight: set[asyncio.Future[Any]] = set()
    deadline = time.monotonic() + within
    tick = 0.1
    while to_send or in_flight:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"core banking could not deliver {len(to_send) + len(in_flight)} postings "
                f"within {within}s"
            )
        for _ in range(min(len(to_send), max(1, round(rate * tick)))):
            posting = to_send.popleft()
            stream.sent_at[posting.event_id] = time.monotonic()
            try:
                delivery = await producer.send(
                    "repayment-posted", posting.value, key=posting.loan_id.encode()
                )
            except KafkaError as exc:
                # No metadata from a broker that is down: try this one again later.
                log.debug("posting not sent (%s); will resend", exc)
                to_send.appendleft(posting)
                stream.resent += 1
                break
            in_flight.add(delivery)
            delivery.add_done_callback(
                lambda done, p=posting: _settle(done, p, stream, to_send, in_flight)
            )
        await asyncio.sleep(tick)


def _settle(
    delivery: asyncio.Future[Any],
    posting: Posting,
    stream: Stream,
    to_send: deque[Posting],
    in_flight: set[asyncio.Future[Any]],
) -> None:
    in_flight.discard(delivery)
    if delivery.cancelled() or delivery.exception() is not None:
        to_send.append(posting)
        stream.resent += 1
    else:
        stream.acked_at[posting.event_id] = time.monotonic()
