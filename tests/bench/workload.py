"""What core banking sends the bench: agents and loans over REST, postings on Kafka."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from shared.events import REPAYMENT_POSTED
from tests.support import ADMIN, CORE_BANKING, loan_body, repayment_event

REGIONS = ("SH", "BJ", "GZ", "SZ")
AGENTS_PER_REGION = 3
# Today's scheduler refuses a larger import with a 413; the bench then sends chunks.
FALLBACK_CHUNK = 10_000
LINES_PER_PIECE = 500  # NDJSON lines per piece of the streamed body
NDJSON = {"content-type": "application/x-ndjson"}


@dataclass(frozen=True)
class Posting:
    event_id: str
    loan_id: str
    missed: bool
    value: bytes


def loan_ids(prefix: str, count: int) -> list[str]:
    return [f"L-{prefix}-{n:07d}" for n in range(1, count + 1)]


async def register_agents(scheduler: httpx.AsyncClient) -> list[str]:
    agents = []
    for region in REGIONS:
        for n in range(1, AGENTS_PER_REGION + 1):
            agent_id = f"AG-BEN-{region}-{n}"
            response = await scheduler.put(
                f"/v1/agents/{agent_id}",
                json={
                    "name": "李娜",
                    "region": region,
                    "methods": ["phone", "field"],
                    "daily_capacity": 40,
                },
                headers=ADMIN,
            )
            response.raise_for_status()
            agents.append(agent_id)
    return agents


def _ndjson_line(n: int, loan_id: str) -> bytes:
    disbursed = datetime.now(UTC).date() - timedelta(days=120)
    body = loan_body(region=REGIONS[n % len(REGIONS)], grade="ABCDE"[n % 5], disbursed_on=disbursed)
    return json.dumps({"loan_id": loan_id, **body}).encode() + b"\n"


async def _body(loans: Sequence[str]) -> AsyncIterator[bytes]:
    """The NDJSON body in pieces, made as it is sent: the bench never holds the whole file."""
    for start in range(0, len(loans), LINES_PER_PIECE):
        piece = loans[start : start + LINES_PER_PIECE]
        yield b"".join(_ndjson_line(start + i, loan_id) for i, loan_id in enumerate(piece))
        await asyncio.sleep(0)


@dataclass
class ImportOutcome:
    seconds: float
    chunked: bool
    answers: list[dict[str, Any]]

    def summary(self) -> str:
        """The answers in short: what a list holds is counted, not listed."""
        shown = []
        for answer in self.answers[:3]:
            shown.append(
                {
                    key: f"[{len(value)} items]" if isinstance(value, list) else value
                    for key, value in answer.items()
                }
            )
        more = f" (+{len(self.answers) - 3} more answers)" if len(self.answers) > 3 else ""
        return json.dumps(shown, ensure_ascii=False) + more


async def import_loans(scheduler: httpx.AsyncClient, loans: Sequence[str]) -> ImportOutcome:
    """`loans` through `POST /v1/loans/import` as one streamed body; chunks of
    FALLBACK_CHUNK lines if the scheduler refuses the whole (413)."""
    started = time.perf_counter()
    response = await scheduler.post(
        "/v1/loans/import", content=_body(loans), headers=CORE_BANKING | NDJSON
    )
    if response.status_code != 413:
        _raise_for(response)
        return ImportOutcome(time.perf_counter() - started, False, [response.json()])
    started = time.perf_counter()
    answers = []
    for start in range(0, len(loans), FALLBACK_CHUNK):
        chunk = loans[start : start + FALLBACK_CHUNK]
        response = await scheduler.post(
            "/v1/loans/import", content=_body(chunk), headers=CORE_BANKING | NDJSON
        )
        _raise_for(response)
        answers.append(response.json())
    return ImportOutcome(time.perf_counter() - started, True, answers)


def _raise_for(response: httpx.Response) -> None:
    if response.is_error:
        raise RuntimeError(f"loan import answered {response.status_code}: {response.text[:500]}")


def postings(
    loans: Sequence[str], count: int, *, first_installment: int, missed_share: float, dpd: int
) -> Iterator[Posting]:
    """`count` postings round-robin over `loans`, a loan's next installment a round later
    (as month-end runs come); every 1/`missed_share`-th one missed at `dpd` days past due."""
    every = round(1 / missed_share)
    for n in range(count):
        loan_id = loans[n % len(loans)]
        missed = n % every == 0
        event = repayment_event(
            loan_id,
            status="missed" if missed else "paid",
            days_past_due=dpd if missed else 0,
            installment_no=first_installment + n // len(loans),
        )
        yield Posting(event["event_id"], loan_id, missed, json.dumps(event).encode())


def rounds(count: int, loans: int) -> int:
    """Installments per loan a run of `count` postings uses."""
    return -(-count // loans)


def producer(bootstrap: str) -> AIOKafkaProducer:
    # Tansu has no idempotent producer; linger lets send() batch, as core banking's would.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, acks="all", linger_ms=5
    )


async def send(
    kafka: AIOKafkaProducer, topic: str, batch: Iterable[Posting]
) -> list[asyncio.Future[Any]]:
    """Hand every posting to the producer without waiting for each; the deliveries."""
    return [
        await kafka.send(topic, posting.value, key=posting.loan_id.encode()) for posting in batch
    ]


async def send_and_confirm(kafka: AIOKafkaProducer, topic: str, batch: Iterable[Posting]) -> None:
    await asyncio.gather(*await send(kafka, topic, batch))


TOPIC = REPAYMENT_POSTED
