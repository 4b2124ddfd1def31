"""The desk's views, against the real database and broker: filters (region from the loan
facts, assignee, created range), the summary counts, and the tail of `alert-raised`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiokafka import AIOKafkaProducer

from services.alerts import tail
from tests.alerts_support import loan_registered_event
from tests.integration.conftest import System
from tests.support import (
    auth,
    eventually,
    fetchval,
    new_id,
    produce,
    repayment_event,
    visit_event,
)

OPS = auth("ops", "ops-desk-1")


async def listed(system: System, query: str) -> list[dict[str, Any]]:
    response = await system.alerts.get(f"/v1/alerts?{query}&limit=200", headers=OPS)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_filters_by_region_assignee_and_created_range_and_the_summary(
    system: System, producer: AIOKafkaProducer
) -> None:
    region = new_id("RG")
    north, south = new_id("N"), new_id("S")
    facts = [
        loan_registered_event(north, region=region),
        loan_registered_event(south, region=new_id("RG")),
    ]
    for fact in facts:
        await produce(producer, fact)
    started = datetime.now(UTC) - timedelta(seconds=1)
    events = [
        repayment_event(north, days_past_due=95),
        visit_event(north, outcome="refused"),
        repayment_event(south, days_past_due=35),
    ]
    for event in events:
        await produce(producer, event)

    async def applied() -> bool:
        sql = "SELECT count(*) FROM alerts.inbox WHERE event_id = ANY($1::uuid[])"
        # The region filter reads the loan facts, which come on their own topic: nothing
        # orders them before the postings, so wait for them too.
        ids = [e["event_id"] for e in [*facts, *events]]
        return bool(await fetchval(system.database_url, sql, ids) == len(ids))

    await eventually(applied)
    in_region = await listed(system, f"region={region}")
    assert sorted(a["rule"] for a in in_region) == ["dpd_90", "visit_refused"]
    assert {a["loan_id"] for a in in_region} == {north}

    [dpd] = [a for a in in_region if a["rule"] == "dpd_90"]
    await system.alerts.post(
        f"/v1/alerts/{dpd['alert_id']}/assign", json={"assignee": "ops-desk-7"}, headers=OPS
    )
    assert [a["alert_id"] for a in await listed(system, "assignee=ops-desk-7")] == [dpd["alert_id"]]
    since = quote(started.isoformat())
    recent = await listed(system, f"created_from={since}&region={region}")
    assert len(recent) == 2
    assert await listed(system, f"created_before={since}&region={region}") == []

    summary = await system.alerts.get(f"/v1/alerts/summary?region={region}", headers=OPS)
    assert summary.status_code == 200, summary.text
    assert summary.json() == {
        "total": 2,
        "by_rule": {"dpd_90": 1, "visit_refused": 1},
        "by_severity": {"critical": 1, "medium": 1},
        "by_status": {"open": 2},
    }
    everything = (await system.alerts.get("/v1/alerts/summary", headers=OPS)).json()
    assert everything["total"] >= 3
    assert sum(everything["by_rule"].values()) == everything["total"]
    bad = await system.alerts.get("/v1/alerts?created_from=yesterday", headers=OPS)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "query.created_from"


async def test_the_tail_prints_alerts_as_they_are_raised(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = new_id("TAIL")
    await produce(producer, loan_registered_event(loan_id))
    await produce(producer, repayment_event(loan_id, days_past_due=95))
    lines: list[str] = []
    followed = tail.follow(
        system.bootstrap,
        from_beginning=True,
        out=lines.append,
        until=lambda alert: alert.loan_id == loan_id,
    )
    assert await asyncio.wait_for(followed, timeout=30) == len(lines)
    line = lines[-1]
    assert f"loan {loan_id}" in line
    assert "CRIT" in line and "dpd_90" in line and "→ legal_review" in line
