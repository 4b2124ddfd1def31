"""The services' own workers against hostile records and operator repairs, on the real
database and broker: a poison record neither stops a consumer nor holds up its partition,
readiness covers the database, the broker and the workers, and a service's outbox can be
re-published without anything being applied twice."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from services.alerts.models import health as alerts_health
from services.scheduler.models import health as scheduler_health
from services.visits.models import outbox as visits_outbox
from shared.db import make_engine, make_session_factory, unit_of_work
from shared.events import VisitCompleted
from shared.health import HealthTables
from shared.ops import read_records
from shared.outbox import enqueue
from tests.integration.conftest import System
from tests.ops_support import dead_letters_of, run_ops
from tests.support import (
    ADMIN,
    auth,
    eventually,
    fetchval,
    new_id,
    produce,
    register_loan,
    repayment_event,
    visit_event,
)

OPS = auth("ops", "ops-desk-1")


async def readiness(client: httpx.AsyncClient) -> httpx.Response:
    async def ready() -> httpx.Response | None:
        response = await client.get("/readyz")
        return response if response.status_code == 200 else None

    return await eventually(ready)


async def polled_since(system: System, tables: HealthTables, role: str, moment: datetime) -> bool:
    """Whether a member of `role` reported a poll of the broker after `moment`."""
    hb = tables.heartbeats
    last: datetime | None = await fetchval(
        system.database_url,
        f"SELECT max((detail->>'last_poll_at')::timestamptz) FROM {hb.schema}.{hb.name} "
        "WHERE role = $1",
        role,
    )
    return last is not None and last > moment


async def test_a_poison_record_stops_no_consumer_and_holds_up_no_later_posting(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = await register_loan(system.scheduler, new_id("POISON"))
    poison = b"\x01" * 200 * 1024
    # 200 KB of control bytes, then a valid posting of the same loan: the same partition.
    await producer.send_and_wait("repayment-posted", poison, key=loan_id.encode())
    await produce(producer, repayment_event(loan_id, days_past_due=95))

    async def dpd_90() -> list[dict[str, Any]] | None:
        response = await system.alerts.get(f"/v1/alerts?loan_id={loan_id}", headers=OPS)
        items: list[dict[str, Any]] = response.json()["items"]
        return [a for a in items if a["rule"] == "dpd_90"] or None

    async def field_inspection() -> bool:
        response = await system.scheduler.get(f"/v1/loans/{loan_id}/tasks", headers=ADMIN)
        return any(t["method"] == "field" for t in response.json()["items"])

    [alert] = await eventually(dpd_90)
    assert alert["severity"] == "critical"
    await eventually(field_inspection)
    applied_at = datetime.now(UTC)

    # Each group dead-lettered the poison: truncated, with its digest, size and source.
    for group in ("scheduler", "alerts"):
        [dead] = [
            d
            for d in await dead_letters_of(system.bootstrap, "repayment-posted", group)
            if d.get("key") == loan_id
        ]
        assert dead["payload_truncated"] is True
        assert dead["payload_size"] == len(poison)
        assert dead["payload_sha256"] == hashlib.sha256(poison).hexdigest()
        assert dead["source_topic"] == "repayment-posted"
        assert isinstance(dead["partition"], int) and isinstance(dead["offset"], int)
        assert dead["reason"].startswith("unparseable event")

    # ... and both consumers are still polling afterwards.
    for tables, role in (
        (scheduler_health, "consumer:scheduler"),
        (alerts_health, "consumer:alerts"),
    ):

        async def still_polling(tables: HealthTables = tables, role: str = role) -> bool:
            return await polled_since(system, tables, role, applied_at)

        await eventually(still_polling)


async def test_readiness_covers_database_broker_and_workers(system: System) -> None:
    expected = {
        "scheduler": {"consumer:scheduler", "relay:scheduler.outbox"},
        "visits": {"consumer:visits", "relay:visits.outbox"},
        "alerts": {"consumer:alerts", "relay:alerts.outbox"},
    }
    for name, client in (
        ("scheduler", system.scheduler),
        ("visits", system.visits),
        ("alerts", system.alerts),
    ):
        body = (await readiness(client)).json()
        assert body["status"] == "ready"
        checks = body["checks"]
        assert {"database", "broker", "broker_loss"} | expected[name] == set(checks)
        assert all(check["ok"] for check in checks.values())
        for role in expected[name]:
            assert checks[role]["detail"]["broker"] == "ok"
            assert checks[role]["detail"]["seconds_ago"] < 30
    consumer = (await system.scheduler.get("/readyz")).json()["checks"]["consumer:scheduler"]
    assert "repayment-posted/0" in consumer["detail"]["assignment"]


async def test_republish_sends_an_outbox_again_and_consumers_apply_it_once(
    system: System,
) -> None:
    loan_id = await register_loan(system.scheduler, new_id("REPUB"))
    first = VisitCompleted.model_validate(visit_event(loan_id))
    engine = make_engine(system.database_url)
    sessions = make_session_factory(engine)
    since = datetime.now(UTC)
    try:
        async with unit_of_work(sessions) as session:
            await enqueue(session, visits_outbox, first)
        await eventually(lambda: applied(system, "scheduler", first))
        await eventually(lambda: applied(system, "alerts", first))

        # The broker lost it (say): the operator re-publishes the visits outbox.
        out = await run_ops(
            system.database_url,
            system.bootstrap,
            "republish",
            "--service",
            "visits",
            "--since",
            since.isoformat(),
        )
        assert "all of them sent again" in out, out
        assert copies_on_topic(await read_records(system.bootstrap, "visit-completed"), first) == 2

        # A later visit of the loan (same partition) is applied after the copy, once.
        later = VisitCompleted.model_validate(visit_event(loan_id))
        async with unit_of_work(sessions) as session:
            await enqueue(session, visits_outbox, later)
        await eventually(lambda: applied(system, "scheduler", later))
        await eventually(lambda: applied(system, "alerts", later))
    finally:
        await engine.dispose()
    for schema in ("scheduler", "alerts"):
        assert await applied(system, schema, first) == 1


async def applied(system: System, schema: str, event: VisitCompleted) -> int:
    """How many times `schema`'s consumer recorded `event` in its inbox."""
    count: int = await fetchval(
        system.database_url,
        f"SELECT count(*) FROM {schema}.inbox WHERE event_id = $1",
        event.event_id,
    )
    return count


def copies_on_topic(records: list[Any], event: VisitCompleted) -> int:
    return sum(
        1 for r in records if isinstance(r, dict) and r.get("event_id") == str(event.event_id)
    )
