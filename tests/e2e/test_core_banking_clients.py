"""Core banking's integration teams mostly use librdkafka (confluent-kafka) or the Java
client, not aiokafka: a posting produced with confluent-kafka raises its alert like any
other, and the desk can follow `alert-raised` with confluent-kafka too."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from shared.topics_admin import TOPIC_PARTITIONS
from tests.e2e.conftest import Running
from tests.support import auth, eventually, new_id, register_loan, repayment_event

OPS = auth("ops", "risk-desk-2")


@pytest.fixture
async def scheduler(running: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running.urls["scheduler"], timeout=10) as client:
        yield client


def produce_with_librdkafka(bootstrap: str, event: dict[str, Any]) -> None:
    """What a core-banking team writes with confluent-kafka. `murmur2_random` is the Java
    client's partitioner (librdkafka's default is CRC32-based), so a loan's postings land on
    the partition other producers use for it and keep their order."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            # The embedded broker has no idempotent producer (the inbox deduplicates).
            "enable.idempotence": False,
            "partitioner": "murmur2_random",
        }
    )
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error)

    producer.produce(
        "repayment-posted",
        key=str(event["loan_id"]).encode(),
        value=json.dumps(event).encode(),
        on_delivery=delivered,
    )
    assert producer.flush(15) == 0, "posting not delivered in 15 s"
    assert failures == []


def read_alert_with_librdkafka(bootstrap: str, source_event_id: str) -> dict[str, Any]:
    """Follow `alert-raised` from the start by assigned partitions (no group join)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": new_id("desk"), "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition("alert-raised", p, 0) for p in range(TOPIC_PARTITIONS)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            value = json.loads(message.value() or b"null")
            if isinstance(value, dict) and value.get("source_event_id") == source_event_id:
                return value
        raise AssertionError("no alert-raised record for the posting within 30 s")
    finally:
        consumer.close()


async def test_a_posting_from_confluent_kafka_raises_its_alert(
    running: Running, scheduler: httpx.AsyncClient
) -> None:
    loan_id = await register_loan(scheduler, new_id("CK"))
    missed = repayment_event(loan_id, status="missed", days_past_due=95, installment_no=2)

    await asyncio.to_thread(produce_with_librdkafka, running.bootstrap, missed)

    raised = await asyncio.to_thread(
        read_alert_with_librdkafka, running.bootstrap, str(missed["event_id"])
    )
    assert (raised["loan_id"], raised["rule"], raised["severity"]) == (
        loan_id,
        "dpd_90",
        "critical",
    )

    async def planned_field_visit() -> list[dict[str, Any]] | None:
        response = await scheduler.get(
            "/v1/tasks", params={"loan_id": loan_id, "status": "open"}, headers=OPS
        )
        items: list[dict[str, Any]] = response.json()["items"]
        return items if any(t["method"] == "field" for t in items) else None

    await eventually(planned_field_visit)
