"""Visits recorded before migration 0006 have no region; the visits worker's projection of
`loan-registered` fills it (services/visits/regions.py), on the real database and broker,
so that the region's supervisors read them, and their chain still verifies."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.visits import chain, retention
from services.visits.settings import VisitsSettings
from services.visits.stores import evidence_store_for
from shared.db import engine_for, make_session_factory, utcnow
from tests.integration.conftest import System
from tests.integration.test_visit_chain import verify_loan
from tests.support import (
    CORE_BANKING,
    PHONE_FINDINGS,
    eventually,
    fetchval,
    loan_body,
    new_id,
    supervisor,
)


async def record_before_0006(system: System, loan_id: str) -> uuid.UUID:
    """A visit as it was stored before 0006: no region, chained in format 1."""
    recorded = datetime.now(UTC) - timedelta(days=30)
    visit: dict[str, Any] = {
        "visit_id": uuid.uuid4(),
        "request_hash": "0" * 64,
        "loan_id": loan_id,
        "agent_id": new_id("AG"),
        "task_id": None,
        "method": "phone",
        "outcome": "completed",
        "started_at": recorded - timedelta(minutes=10),
        "ended_at": recorded - timedelta(minutes=5),
        "findings": PHONE_FINDINGS,
        "geo_lat": None,
        "geo_lon": None,
        "notes": None,
        "created_at": recorded,
    }
    link = chain.next_link(None, visit, 1)
    await fetchval(
        system.database_url,
        "INSERT INTO visits.visits (visit_id, agent_id, idempotency_key, request_hash, loan_id,"
        " method, outcome, started_at, ended_at, findings, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11)",
        visit["visit_id"],
        visit["agent_id"],
        new_id("K"),
        visit["request_hash"],
        loan_id,
        "phone",
        "completed",
        visit["started_at"],
        visit["ended_at"],
        json.dumps(PHONE_FINDINGS),
        recorded,
    )
    await fetchval(
        system.database_url,
        "INSERT INTO visits.visit_chain (visit_id, loan_id, seq, prev_hash, payload_hash,"
        " entry_hash, format, chained_at) VALUES ($1, $2, $3, $4, $5, $6, 1, now())",
        visit["visit_id"],
        loan_id,
        link.seq,
        link.prev_hash,
        link.payload_hash,
        link.entry_hash,
    )
    visit_id: uuid.UUID = visit["visit_id"]
    return visit_id


async def test_a_visit_recorded_before_regions_gets_its_loans_region(system: System) -> None:
    region, loan_id = new_id("R"), new_id("L")
    visit_id = await record_before_0006(system, loan_id)
    reader = supervisor(region)

    async def listed() -> list[dict[str, Any]]:
        response = await system.visits.get(
            "/v1/visits", params={"loan_id": loan_id}, headers=reader
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    assert await listed() == []  # no region yet: its supervisors cannot read it
    # Core banking registers the loan; the scheduler announces it on loan-registered.
    registered = await system.scheduler.put(
        f"/v1/loans/{loan_id}", json=loan_body(region=region), headers=CORE_BANKING
    )
    assert registered.status_code == 201, registered.text

    items = await eventually(listed)
    assert [item["visit_id"] for item in items] == [str(visit_id)]
    stored = await fetchval(
        system.database_url, "SELECT region FROM visits.visits WHERE visit_id = $1", visit_id
    )
    assert stored == region
    # Another region's supervisor still reads nothing of it.
    other = await system.visits.get(
        "/v1/visits", params={"loan_id": loan_id}, headers=supervisor(new_id("R"))
    )
    assert other.json()["items"] == []
    # The format-1 entry does not cover the region: the chain holds.
    assert (await verify_loan(system, loan_id))["intact"] is True


async def test_the_sweep_fills_the_region_of_visits_whose_loan_was_projected_before(
    system: System,
) -> None:
    """The backfill of the worker's sweep (services/visits/retention.py): a visit recorded
    before 0006 whose loan's `loan-registered` was applied earlier (so no event will come
    to fill it) gets its region from the projection, in batches; a loan never projected
    leaves its visit without one."""
    region = new_id("R")
    projected = [new_id("L"), new_id("L")]
    unknown = new_id("L")
    # The projection as an earlier announcement left it: no event reaches these loans now.
    for loan_id in projected:
        await fetchval(
            system.database_url,
            "INSERT INTO visits.loan_regions (loan_id, region, as_of) VALUES ($1, $2, now())",
            loan_id,
            region,
        )
    visits = [await record_before_0006(system, loan_id) for loan_id in projected]
    orphan = await record_before_0006(system, unknown)
    settings = VisitsSettings(env="test", database_url=system.database_url)
    engine = engine_for(settings, pool_size=1)
    try:
        # A batch of one: the sweep goes round until a batch comes back short.
        swept = await retention.sweep(
            make_session_factory(engine),
            settings,
            utcnow(),
            evidence_store_for(settings),
            batch=1,
        )
    finally:
        await engine.dispose()
    assert swept.regions_filled >= len(visits)
    for visit_id in visits:
        stored = await fetchval(
            system.database_url, "SELECT region FROM visits.visits WHERE visit_id = $1", visit_id
        )
        assert stored == region
    orphan_region = await fetchval(
        system.database_url, "SELECT region FROM visits.visits WHERE visit_id = $1", orphan
    )
    assert orphan_region is None
    # The region's supervisor now reads both; the format-1 entries still verify.
    listed = await system.visits.get(
        "/v1/visits", params={"loan_id": projected[0]}, headers=supervisor(region)
    )
    assert [item["visit_id"] for item in listed.json()["items"]] == [str(visits[0])]
    for loan_id in projected:
        assert (await verify_loan(system, loan_id))["intact"] is True
