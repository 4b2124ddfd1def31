"""Drafts and the retention of idempotency keys, on the real database and broker (issue 7,
offline-first): a draft is its agent's alone and reaches nobody until submitted; a
client-generated visit id replays a capture even once its Idempotency-Key has expired."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from services.visits import retention
from services.visits.settings import VisitsSettings
from services.visits.stores import evidence_store_for
from shared.db import engine_for, make_session_factory, utcnow
from tests.integration.conftest import System
from tests.integration.test_visits import assert_problem, assign, post_visit, visit_body
from tests.support import auth, fetchval, new_id, read_topic


def on_topic(visit_id: str) -> Any:
    return lambda event: event.get("visit_id") == visit_id


async def test_a_draft_is_its_agents_alone_and_published_only_when_submitted(
    system: System,
) -> None:
    job = await assign(system)
    visit_id = str(uuid.uuid4())  # the device's own id
    url = f"/v1/visit-drafts/{visit_id}"
    partial = {"loan_id": job.loan_id, "method": "phone", "notes": "打了两次没接"}
    saved = await system.visits.put(url, json=partial, headers=job.headers)
    assert saved.status_code == 200, saved.text
    assert (saved.json()["visit_id"], saved.json()["method"]) == (visit_id, "phone")

    # Nobody else sees it, or can overwrite it.
    stranger = auth("agent", new_id("AG"))
    assert_problem(await system.visits.get(url, headers=stranger), 404)
    assert_problem(await system.visits.put(url, json=partial, headers=stranger), 404)
    assert_problem(await system.visits.post(f"{url}/submit", headers=stranger), 404)
    others = await system.visits.get("/v1/visit-drafts", headers=stranger)
    assert others.json() == {"items": [], "next_cursor": None}
    mine = await system.visits.get("/v1/visit-drafts", headers=job.headers)
    assert [d["visit_id"] for d in mine.json()["items"]] == [visit_id]
    # Not a visit yet, to anyone.
    assert_problem(await system.visits.get(f"/v1/visits/{visit_id}", headers=job.headers), 404)

    # Submitting an incomplete draft names what is missing; nothing is recorded.
    incomplete = assert_problem(await system.visits.post(f"{url}/submit", headers=job.headers), 422)
    fields = {e["field"] for e in incomplete["errors"]}
    assert {"body.outcome", "body.started_at", "body.ended_at", "body.findings"} <= fields
    # The capture rules wait for submission: a phone draft may claim the car for now.
    complete = visit_body(job.loan_id, job.task_id) | {"findings": {"vehicle_sighted": True}}
    del complete["notes"]
    updated = await system.visits.put(url, json=complete, headers=job.headers)
    assert updated.status_code == 200, updated.text
    refused = assert_problem(await system.visits.post(f"{url}/submit", headers=job.headers), 422)
    assert [e["field"] for e in refused["errors"]] == ["body.findings.vehicle_sighted"]
    with pytest.raises(AssertionError):
        await read_topic(system.bootstrap, "visit-completed", on_topic(visit_id), within=2)

    complete["findings"] = {"vehicle_sighted": None}
    assert (await system.visits.put(url, json=complete, headers=job.headers)).status_code == 200
    submitted = await system.visits.post(f"{url}/submit", headers=job.headers)
    assert submitted.status_code == 201, submitted.text
    visit = submitted.json()
    assert (visit["visit_id"], visit["task_id"], visit["review_state"]) == (
        visit_id,
        job.task_id,
        "pending",
    )
    event = await read_topic(system.bootstrap, "visit-completed", on_topic(visit_id))
    assert event["task_id"] == job.task_id
    # Submitted twice (the answer was lost): the same visit, once.
    again = await system.visits.post(f"{url}/submit", headers=job.headers)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == visit
    # The draft is gone, and the id cannot become a draft again.
    assert_problem(await system.visits.get(url, headers=job.headers), 404)
    assert_problem(await system.visits.put(url, json=partial, headers=job.headers), 409)
    proof = await system.visits.get(f"/v1/visits/{visit_id}/proof", headers=job.headers)
    assert proof.status_code == 200, proof.text


async def test_a_client_visit_id_replays_after_the_key_expired(system: System) -> None:
    job = await assign(system)
    settings = VisitsSettings(env="test", database_url=system.database_url)
    engine = engine_for(settings, pool_size=1)
    sessions = make_session_factory(engine)
    store = evidence_store_for(settings)
    try:
        visit_id = str(uuid.uuid4())
        body = visit_body(job.loan_id) | {"visit_id": visit_id}
        first = await post_visit(system, job.headers, body, key="K-offline-1")
        assert first.status_code == 201, first.text
        assert first.json()["visit_id"] == visit_id
        untouched = await post_visit(system, job.headers, visit_body(job.loan_id), key="K-plain")
        assert untouched.status_code == 201, untouched.text
        draft = f"/v1/visit-drafts/{uuid.uuid4()}"
        put = await system.visits.put(draft, json={"loan_id": job.loan_id}, headers=job.headers)
        assert put.status_code == 200, put.text

        # Within the retention nothing is swept.
        await retention.sweep(sessions, settings, utcnow() + timedelta(days=6), store)
        assert (await key_of(system, visit_id)) == "K-offline-1"
        # Eight days on, the key is gone (the visit and its chain entry are not); in
        # batches of one here, so the sweep goes round until a batch comes back short.
        swept = await retention.sweep(sessions, settings, utcnow() + timedelta(days=8), store, 1)
        assert swept.keys_expired >= 2
        assert await key_of(system, visit_id) is None

        # The device resends under another key: its visit id makes it a replay.
        resent = await post_visit(system, job.headers, body, key="K-offline-2")
        assert resent.status_code == 201 and resent.headers["idempotent-replayed"] == "true"
        assert resent.json()["visit_id"] == visit_id
        # The same id with another body is not this visit.
        assert_problem(await post_visit(system, job.headers, body | {"notes": "x"}), 409)
        # Another agent's id is never its visit.
        stranger = auth("agent", new_id("AG"))
        assert_problem(await post_visit(system, stranger, body), 409)
        # Without a visit id, an expired key records a new capture.
        again = await post_visit(system, job.headers, visit_body(job.loan_id), key="K-plain")
        assert again.status_code == 201, again.text
        assert "idempotent-replayed" not in again.headers
        assert again.json()["visit_id"] != untouched.json()["visit_id"]

        # Drafts untouched for 30 days are purged.
        assert (await system.visits.get(draft, headers=job.headers)).status_code == 200
        purged = await retention.sweep(sessions, settings, utcnow() + timedelta(days=31), store)
        assert purged.drafts_purged >= 1
        assert_problem(await system.visits.get(draft, headers=job.headers), 404)
        verified = await system.visits.get(
            "/v1/visits/verify", params={"loan_id": job.loan_id}, headers=auth("ops", "desk")
        )
        assert verified.json()["intact"] is True
    finally:
        await engine.dispose()


async def key_of(system: System, visit_id: str) -> str | None:
    sql = "SELECT idempotency_key FROM visits.visits WHERE visit_id = $1"
    key: str | None = await fetchval(system.database_url, sql, uuid.UUID(visit_id))
    return key
