"""Both consumers of a topic judge an event alike: what one dead-letters, the other does
too, and nothing is applied by one and refused by the other (issue 5, defect 3).

One difference in timing, on purpose: an event about a loan nobody registered is refused by
the scheduler at once (it owns registration), while alerts parks it until the grace period
is over, because the loan's `loan-registered` may still be on its way on another topic.
Both dead-letter it with the same reason in the end."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.alerts_support import claimed, parked_count, parking_sweep
from tests.integration.conftest import System
from tests.support import (
    auth,
    eventually,
    fetchval,
    new_id,
    produce,
    read_topic,
    register_loan,
    repayment_event,
    visit_event,
)

OPS = auth("ops", "ops-desk-1")
CONSUMERS = ("scheduler", "alerts")


async def dead_lettered_by_both(system: System, topic: str, event_id: str) -> list[str]:
    """The reasons each consumer group gave for dead-lettering the event."""
    reasons = []
    for group in CONSUMERS:

        def of_this_event(record: dict[str, Any], group: str = group) -> bool:
            return event_id in record.get("payload", "") and record.get("consumer_group") == group

        dead = await read_topic(system.bootstrap, f"{topic}.dlq", of_this_event)
        reasons.append(str(dead["reason"]))
    return reasons


async def alerts_of(system: System, loan_id: str) -> list[dict[str, Any]]:
    response = await system.alerts.get(f"/v1/alerts?loan_id={loan_id}", headers=OPS)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def dead_letter_after_the_grace(
    system: System, producer: AIOKafkaProducer, event: dict[str, Any]
) -> None:
    """Alerts holds the event parked (claimed, no alert); a sweep with a tiny grace then
    dead-letters it and lets go of its inbox claim."""
    await eventually(lambda: parked_count(system.database_url, event["event_id"]))
    assert await claimed(system.database_url, event["event_id"])
    async with parking_sweep(system.database_url, producer, grace=timedelta(0)) as sweep:
        assert await sweep.expire() >= 1
    assert await parked_count(system.database_url, event["event_id"]) == 0


async def test_posting_for_an_unregistered_loan_is_dead_lettered_by_both_consumers(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = new_id("GHOST")
    event = repayment_event(loan_id, status="missed", days_past_due=40)
    await produce(producer, event)
    await dead_letter_after_the_grace(system, producer, event)

    reasons = await dead_lettered_by_both(system, "repayment-posted", event["event_id"])
    expected = f"loan {loan_id} is not registered with the scheduler"
    assert all(reason.startswith(expected) for reason in reasons), reasons
    assert await alerts_of(system, loan_id) == []
    # Neither consumer keeps it as applied, so a replay after registration applies it.
    for schema in CONSUMERS:
        applied = await fetchval(
            system.database_url,
            f"SELECT count(*) FROM {schema}.inbox WHERE event_id = $1::uuid",
            event["event_id"],
        )
        assert applied == 0, schema


async def test_visit_on_an_unregistered_loan_raises_no_alert(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = new_id("GHOST")
    event = visit_event(loan_id, findings={"encumbrance_detected": True})
    await produce(producer, event)
    await dead_letter_after_the_grace(system, producer, event)

    reasons = await dead_lettered_by_both(system, "visit-completed", event["event_id"])
    assert all("not registered" in reason for reason in reasons), reasons
    assert await alerts_of(system, loan_id) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("days_past_due", 10**12),
        ("occurred_at", "9999-12-31T00:00:00+00:00"),
        ("due_date", "9999-12-31"),
        ("installment_no", 10**9),
        ("loan_id", "L\x00x"),
    ],
)
async def test_out_of_bounds_posting_is_refused_by_both_consumers(
    system: System, producer: AIOKafkaProducer, field: str, value: object
) -> None:
    loan_id = await register_loan(system.scheduler, new_id("BOUND"))
    event = repayment_event(loan_id, status="missed", days_past_due=95)
    event[field] = value
    await produce(producer, event)

    reasons = await dead_lettered_by_both(system, "repayment-posted", event["event_id"])
    assert all(reason.startswith("invalid event") and field in reason for reason in reasons)

    # The loan's next, sane posting is applied by both: no critical alert from the bad one.
    good = repayment_event(loan_id, status="missed", days_past_due=10, installment_no=2)
    await produce(producer, good)

    async def raised() -> list[dict[str, Any]] | None:
        return await alerts_of(system, loan_id) or None

    assert [a["rule"] for a in await eventually(raised)] == ["dpd_1"]
