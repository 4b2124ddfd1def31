"""The alerts service's own projection of loan facts (`loan-registered`), the events parked
until their loan's facts arrive, the sweep of those that never get them, and alerts raised
set-based over a batch, against the real database and broker."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from services.alerts.parking import PARKED_PARTITION, PARKING_ROLE
from shared import dead_letters
from shared.events import RepaymentPosted
from shared.vocabulary import AgreedUsage
from tests.alerts_support import (
    claimed,
    desk_of,
    expected_desk,
    loan_registered_event,
    parked_count,
    parking_sweep,
)
from tests.integration.conftest import System
from tests.support import (
    CORE_BANKING,
    auth,
    eventually,
    fetchrow,
    fetchval,
    loan_body,
    new_id,
    produce,
    read_topic,
    repayment_event,
    visit_event,
)

OPS = auth("ops", "ops-desk-1")


async def alerts_of(system: System, loan_id: str) -> list[dict[str, Any]]:
    response = await system.alerts.get(f"/v1/alerts?loan_id={loan_id}", headers=OPS)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def facts_of(system: System, loan_id: str) -> Any:
    return await fetchrow(
        system.database_url,
        "SELECT agreed_usage, facts_at, source_event_id::text AS source_event_id, region "
        "FROM alerts.loan_facts WHERE loan_id = $1",
        loan_id,
    )


# --- the projection -----------------------------------------------------------------------


async def test_newest_facts_win_whatever_order_they_arrive_in(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = new_id("FACTS")
    now = datetime.now(UTC)
    older = loan_registered_event(
        loan_id, agreed_usage="private", occurred_at=now - timedelta(hours=1)
    )
    newer = loan_registered_event(loan_id, agreed_usage="ride_hailing", occurred_at=now)
    late = loan_registered_event(
        loan_id, agreed_usage="commercial", occurred_at=now - timedelta(minutes=30)
    )
    # The newer facts overtake the older in one batch, then a late one comes on its own.
    await produce(producer, newer)
    await produce(producer, older)
    await eventually(lambda: claimed(system.database_url, older["event_id"]))
    await produce(producer, late)
    await eventually(lambda: claimed(system.database_url, late["event_id"]))

    facts = await facts_of(system, loan_id)
    assert facts["agreed_usage"] == "ride_hailing"
    assert facts["source_event_id"] == newer["event_id"]
    assert facts["facts_at"] == datetime.fromisoformat(newer["occurred_at"])

    # And the rules read them: ride-hailing is what this loan agreed, so no misuse.
    await produce(producer, visit_event(loan_id, findings={"vehicle_usage": "commercial"}))

    async def raised() -> list[dict[str, Any]] | None:
        return await alerts_of(system, loan_id) or None

    [alert] = await eventually(raised)
    assert alert["rule"] == "vehicle_misuse"
    assert "ride_hailing" in alert["reason"]


async def test_loan_registered_through_the_scheduler_reaches_the_projection(
    system: System,
) -> None:
    loan_id = new_id("L")
    region = new_id("R")
    body = loan_body(region=region, agreed_usage="commercial")
    response = await system.scheduler.put(f"/v1/loans/{loan_id}", json=body, headers=CORE_BANKING)
    assert response.status_code == 201, response.text

    facts = await eventually(lambda: facts_of(system, loan_id))
    assert (facts["agreed_usage"], facts["region"]) == ("commercial", region)


# --- parked events ------------------------------------------------------------------------


async def test_posting_before_its_loans_facts_is_parked_then_raises_its_alert(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = new_id("EARLY")
    posting = repayment_event(loan_id, status="missed", days_past_due=95)
    visit = visit_event(loan_id, findings={"vehicle_usage": "ride_hailing"})
    await produce(producer, posting)
    await produce(producer, visit)

    async def both_parked() -> bool:
        counts = [await parked_count(system.database_url, e["event_id"]) for e in (posting, visit)]
        return counts == [1, 1]

    await eventually(both_parked)
    assert await alerts_of(system, loan_id) == []
    # Claimed like any applied event: a redelivery is not parked twice.
    assert await claimed(system.database_url, posting["event_id"])

    # Origination registers the loan with the scheduler, which announces it.
    body = loan_body(region=new_id("R"), agreed_usage="private")
    response = await system.scheduler.put(f"/v1/loans/{loan_id}", json=body, headers=CORE_BANKING)
    assert response.status_code == 201, response.text

    async def raised() -> list[dict[str, Any]] | None:
        alerts = await alerts_of(system, loan_id)
        return alerts if len(alerts) >= 2 else None

    alerts = await eventually(raised)
    assert sorted((a["rule"], a["source_event_id"]) for a in alerts) == sorted(
        [("dpd_90", posting["event_id"]), ("vehicle_misuse", visit["event_id"])]
    )
    assert await parked_count(system.database_url, posting["event_id"]) == 0
    assert await parked_count(system.database_url, visit["event_id"]) == 0
    announced = await read_topic(
        system.bootstrap, "alert-raised", lambda r: r.get("source_event_id") == posting["event_id"]
    )
    assert announced["rule"] == "dpd_90"


async def test_parked_event_of_a_loan_never_registered_is_dead_lettered_after_the_grace(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = new_id("GHOST")
    posting = repayment_event(loan_id, status="missed", days_past_due=40)
    await produce(producer, posting)
    await eventually(lambda: parked_count(system.database_url, posting["event_id"]))

    # Within the grace the sweep leaves it parked.
    async with parking_sweep(system.database_url, producer, grace=timedelta(hours=1)) as sweep:
        assert await sweep.expire() == 0
    assert await parked_count(system.database_url, posting["event_id"]) == 1

    async with parking_sweep(system.database_url, producer, grace=timedelta(0)) as sweep:
        assert await sweep.expire() >= 1
    assert await parked_count(system.database_url, posting["event_id"]) == 0
    # Out of the inbox too, so that a replay once the loan is registered is applied.
    assert not await claimed(system.database_url, posting["event_id"])

    dead = await read_topic(
        system.bootstrap,
        "repayment-posted.dlq",
        lambda r: posting["event_id"] in r.get("payload", "") and r["consumer_group"] == "alerts",
    )
    assert dead["reason"].startswith(f"loan {loan_id} is not registered with the scheduler")
    assert (dead["source_topic"], dead["partition"], dead["key"]) == (
        "repayment-posted",
        PARKED_PARTITION,
        loan_id,
    )
    original = dead_letters.replayable(dead)
    assert original is not None  # whole: ops can replay it
    replayed = RepaymentPosted.model_validate_json(original.value)
    assert replayed == RepaymentPosted.model_validate(posting)
    assert await alerts_of(system, loan_id) == []


async def test_sweep_applies_an_event_parked_while_its_facts_were_being_projected(
    system: System, producer: AIOKafkaProducer
) -> None:
    # The race: a posting parked by a transaction that did not see the facts another one
    # was committing. Played here by parking it directly beside facts already projected.
    loan_id = new_id("RACE")
    facts = loan_registered_event(loan_id)
    await produce(producer, facts)
    await eventually(lambda: facts_of(system, loan_id))
    posting = RepaymentPosted.model_validate(
        repayment_event(loan_id, status="missed", days_past_due=95)
    )
    await fetchval(
        system.database_url,
        "INSERT INTO alerts.parked_events (event_id, topic, loan_id, payload, parked_at) "
        "VALUES ($1::uuid, 'repayment-posted', $2, $3::jsonb, now()) RETURNING id",
        str(posting.event_id),
        loan_id,
        posting.model_dump_json(),
    )

    async with parking_sweep(system.database_url, producer, grace=timedelta(0)) as sweep:
        assert await sweep.release_known() >= 1

    [alert] = await alerts_of(system, loan_id)
    assert (alert["rule"], alert["source_event_id"]) == ("dpd_90", str(posting.event_id))
    assert await parked_count(system.database_url, str(posting.event_id)) == 0


# --- set-based alerts ---------------------------------------------------------------------


async def test_a_burst_over_many_loans_raises_exactly_the_expected_alerts_once(
    system: System, producer: AIOKafkaProducer
) -> None:
    rng = random.Random(6)
    loans = {new_id("BURST"): rng.choice(list(AgreedUsage)) for _ in range(40)}
    for loan_id, usage in loans.items():
        await produce(producer, loan_registered_event(loan_id, agreed_usage=usage))

    async def all_known() -> bool:
        sql = "SELECT count(*) FROM alerts.loan_facts WHERE loan_id = ANY($1::text[])"
        return bool(await fetchval(system.database_url, sql, list(loans)) == len(loans))

    await eventually(all_known)

    events: list[dict[str, Any]] = []
    for i in range(400):
        loan_id = rng.choice(list(loans))
        if i % 4 == 3:
            findings = {
                "vehicle_usage": rng.choice(["private", "commercial", "ride_hailing", "unknown"]),
                "repayment_difficulty": rng.random() < 0.3,
                "vehicle_condition": rng.choice(["good", "good", "damaged", "missing"]),
            }
            events.append(visit_event(loan_id, findings=findings))
        else:
            status = rng.choice(["paid", "paid", "missed", "partial"])
            dpd = rng.choice([0, 5, 35, 95])
            events.append(
                repayment_event(loan_id, status=status, days_past_due=dpd, installment_no=i + 1)
            )
    # Every event twice: a redelivery of the whole burst.
    for event in events + events:
        await producer.send(
            str(event["event_type"]),
            json.dumps(event).encode(),
            key=str(event["loan_id"]).encode(),
        )
    await producer.flush()

    expected, announcements = expected_desk(events, loans)
    assert sum(expected.values()) > 40 and announcements > 60  # a burst worth the name

    async def all_applied() -> bool:
        sql = "SELECT count(*) FROM alerts.inbox WHERE event_id = ANY($1::uuid[])"
        ids = [e["event_id"] for e in events]
        return bool(await fetchval(system.database_url, sql, ids) == len(events))

    await eventually(all_applied, within=60)
    # One alert per loan and family at a time, escalated and counted, every event once.
    assert await desk_of(system.database_url, list(loans)) == expected
    announced = await fetchval(
        system.database_url,
        "SELECT count(*) FROM alerts.outbox WHERE topic = 'alert-raised' "
        "AND payload->>'loan_id' = ANY($1::text[])",
        list(loans),
    )
    assert announced == announcements
    parked = await fetchval(
        system.database_url,
        "SELECT count(*) FROM alerts.parked_events WHERE loan_id = ANY($1::text[])",
        list(loans),
    )
    assert parked == 0


async def test_the_worker_heartbeat_shows_how_many_events_are_parked(system: System) -> None:
    async def detail() -> Any:
        return await fetchval(
            system.database_url,
            "SELECT detail FROM alerts.worker_heartbeats WHERE role = $1",
            PARKING_ROLE,
        )

    beat = json.loads(await eventually(detail))
    assert beat["kind"] == "parking"
    assert isinstance(beat["parked"], int) and beat["parked"] >= 0
    assert beat["grace_seconds"] == 3600.0
