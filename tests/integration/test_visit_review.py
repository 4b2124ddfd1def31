"""Supervisor review (maker-checker) and corrections as versions, on the real database,
broker and scheduler (issue 7): who may review, once; a returned visit corrected by its
agent and approved, with both chains verifying and the superseded version still provable;
the correction on `visit-completed` with its task, planned once by the scheduler."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.integration.conftest import System
from tests.integration.test_visit_chain import verify_loan
from tests.integration.test_visit_evidence import field_visit
from tests.integration.test_visits import Assignment, assert_problem, assign, post_visit, visit_body
from tests.support import (
    ADMIN,
    auth,
    eventually,
    fetchval,
    new_id,
    read_topic,
    supervisor,
    upload_photo,
)


async def review(
    system: System, headers: dict[str, str], visit_id: str, decision: str, reason: str | None
) -> httpx.Response:
    body: dict[str, Any] = {"decision": decision}
    if reason is not None:
        body["reason"] = reason
    return await system.visits.post(f"/v1/visits/{visit_id}/review", json=body, headers=headers)


def correction_of(body: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A correction restating a capture: loan, task and method are the version's own."""
    kept = {k: v for k, v in body.items() if k not in ("task_id", "loan_id", "method")}
    return kept | overrides


async def correct(
    system: System, job: Assignment, visit_id: str, body: dict[str, Any], key: str
) -> httpx.Response:
    return await system.visits.post(
        f"/v1/visits/{visit_id}/corrections",
        json=body,
        headers=job.headers | {"Idempotency-Key": key},
    )


async def recorded(system: System, job: Assignment, body: dict[str, Any]) -> dict[str, Any]:
    response = await post_visit(system, job.headers, body)
    assert response.status_code == 201, response.text
    visit: dict[str, Any] = response.json()
    return visit


async def test_maker_checker_who_reviews_and_only_once(system: System) -> None:
    job = await assign(system)
    visit = await recorded(system, job, visit_body(job.loan_id, job.task_id))
    visit_id = visit["visit_id"]
    assert (visit["review_state"], visit["review"], visit["version"]) == ("pending", None, 1)
    # Published at submission, before any review.
    await read_topic(system.bootstrap, "visit-completed", lambda e: e.get("visit_id") == visit_id)

    # Another region's supervisor: the visit does not exist for it.
    assert_problem(await review(system, supervisor(new_id("R")), visit_id, "approve", None), 404)
    # Agents, ops and admin are not checkers.
    for who in (job.headers, auth("ops", "desk"), ADMIN):
        assert_problem(await review(system, who, visit_id, "approve", None), 403)
    # Returning without a reason names the reason.
    for reason in (None, "  "):
        missing = assert_problem(
            await review(system, job.supervisor, visit_id, "return", reason), 422
        )
        assert [e["field"] for e in missing["errors"]] == ["body.reason"], missing

    approved = await review(system, job.supervisor, visit_id, "approve", None)
    assert approved.status_code == 200, approved.text
    assert approved.json()["review_state"] == "approved"
    assert approved.json()["review"]["reviewed_by"] == "sup-1"
    # The same decision resent replays; any other decision is a 409.
    again = await review(system, job.supervisor, visit_id, "approve", None)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == approved.json()
    assert_problem(await review(system, job.supervisor, visit_id, "return", "blurred"), 409)
    other_checker = supervisor(job.region, sub="sup-2")
    assert_problem(await review(system, other_checker, visit_id, "approve", None), 409)
    # An approved visit is final: its agent cannot correct it.
    final = await correct(system, job, visit_id, correction_of(visit_body(job.loan_id)), "K1")
    assert_problem(final, 409)

    # Maker is not checker: a supervisor's own visit is reviewed by another supervisor.
    own = await recorded_as(system, job.supervisor, visit_body(job.loan_id))
    assert_problem(await review(system, job.supervisor, own, "approve", None), 403)
    passed = await review(system, other_checker, own, "approve", None)
    assert passed.status_code == 200, passed.text
    verified = await verify_loan(system, job.loan_id)
    assert (verified["intact"], verified["entries_checked"]) == (True, 4)


async def recorded_as(system: System, headers: dict[str, str], body: dict[str, Any]) -> str:
    response = await post_visit(system, headers, body)
    assert response.status_code == 201, response.text
    visit_id: str = response.json()["visit_id"]
    return visit_id


async def test_a_returned_visit_is_corrected_by_its_agent_and_approved(system: System) -> None:
    job = await assign(system)
    photo = await upload_photo(system.visits, job.headers)
    first_body = field_visit(job, [photo], task_id=job.task_id)
    first = await recorded(system, job, first_body)
    first_id = first["visit_id"]

    # The scheduler has completed the task with this visit and planned the next one.
    first_event = await read_topic(
        system.bootstrap, "visit-completed", lambda e: e.get("visit_id") == first_id
    )
    await consumed_by_scheduler(system, first_event["event_id"])
    before = await tasks_of(system, job.loan_id)

    returned = await review(
        system, job.supervisor, first_id, "return", "车牌看不清，请补充就业情况"
    )
    assert returned.status_code == 200, returned.text
    # Back to its agent: in its list of returned visits, with the reason.
    todo = await system.visits.get(
        "/v1/visits", params={"review_state": "returned"}, headers=job.headers
    )
    assert [(v["visit_id"], v["review"]["reason"]) for v in todo.json()["items"]] == [
        (first_id, "车牌看不清，请补充就业情况")
    ]

    # Another agent cannot correct it (it does not exist for them); the region's
    # supervisor reads it but did not record it.
    body = correction_of(
        first_body, findings={**first_body["findings"], "employment_status": "changed"}
    )
    stranger = Assignment(new_id("AG"), job.loan_id, job.task, job.region)
    assert_problem(await correct(system, stranger, first_id, body, "K-x"), 404)
    by_supervisor = await system.visits.post(
        f"/v1/visits/{first_id}/corrections",
        json=body,
        headers=job.supervisor | {"Idempotency-Key": "K-s"},
    )
    assert_problem(by_supervisor, 403)
    # A correction runs the capture rules: a field visit still needs its position.
    assert_problem(await correct(system, job, first_id, body | {"geo": None}, "K-bad"), 422)

    key = new_id("K")
    # The photo of the first version is carried over, not uploaded again.
    created = await correct(system, job, first_id, body, key)
    assert created.status_code == 201, created.text
    second = created.json()
    second_id = second["visit_id"]
    assert (second["version"], second["corrects_visit_id"], second["task_id"]) == (
        2,
        first_id,
        job.task_id,
    )
    assert [e["evidence_id"] for e in second["evidence"]] == [photo]
    assert second["findings"]["employment_status"] == "changed"
    assert second["review_state"] == "pending"
    replayed = await correct(system, job, first_id, body, key)
    assert replayed.status_code == 201 and replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json()["visit_id"] == second_id
    # The old version is superseded: no second correction of it, no review of it.
    old = await system.visits.get(f"/v1/visits/{first_id}", headers=job.headers)
    assert (old.json()["review_state"], old.json()["corrected_by"]) == ("superseded", second_id)
    assert_problem(await correct(system, job, first_id, body, new_id("K")), 409)
    assert_problem(
        await review(system, supervisor(job.region, "sup-2"), first_id, "approve", None), 409
    )

    # The correction travels on visit-completed like any visit, with the task it corrects.
    event = await read_topic(
        system.bootstrap, "visit-completed", lambda e: e.get("visit_id") == second_id
    )
    assert (event["task_id"], event["loan_id"]) == (job.task_id, job.loan_id)
    assert event["findings"]["employment_status"] == "changed"

    approved = await review(system, job.supervisor, second_id, "approve", None)
    assert approved.status_code == 200, approved.text
    pending = await system.visits.get(
        "/v1/visits",
        params={"loan_id": job.loan_id, "review_state": "pending"},
        headers=job.supervisor,
    )
    assert pending.json()["items"] == []

    # Two visit entries and two review decisions, all holding; the superseded version
    # keeps its proof.
    verified = await verify_loan(system, job.loan_id)
    assert (verified["intact"], verified["entries_checked"]) == (True, 4), verified
    proofs = [
        (await system.visits.get(f"/v1/visits/{v}/proof", headers=job.headers)).json()
        for v in (first_id, second_id)
    ]
    assert [(p["seq"], p["format"]) for p in proofs] == [(1, 3), (2, 3)]
    assert proofs[1]["prev_hash"] == proofs[0]["entry_hash"]

    # The scheduler took the correction in: the task stays completed by the first
    # version, and nothing new was planned for the same task.
    await consumed_by_scheduler(system, event["event_id"])
    after = await tasks_of(system, job.loan_id)
    assert after.keys() == before.keys()
    assert after[job.task_id] == before[job.task_id] == ("completed", first_id)


async def consumed_by_scheduler(system: System, event_id: str) -> None:
    sql = "SELECT count(*) FROM scheduler.inbox WHERE event_id = $1"

    async def applied() -> bool:
        return bool(await fetchval(system.database_url, sql, uuid.UUID(event_id)))

    await eventually(applied)


async def tasks_of(system: System, loan_id: str) -> dict[str, tuple[str, str | None]]:
    """The loan's tasks: status and visit, by task id."""
    response = await system.scheduler.get(f"/v1/loans/{loan_id}/tasks", headers=ADMIN)
    assert response.status_code == 200, response.text
    return {t["task_id"]: (t["status"], t["visit_id"]) for t in response.json()["items"]}


async def test_review_decisions_and_states_altered_with_sql_are_found(system: System) -> None:
    job = await assign(system)
    visit = await recorded(system, job, visit_body(job.loan_id))
    visit_id = uuid.UUID(visit["visit_id"])
    returned = await review(system, job.supervisor, str(visit_id), "return", "photo missing")
    assert returned.status_code == 200, returned.text
    assert (await verify_loan(system, job.loan_id))["intact"] is True
    db = system.database_url

    # Someone rewrites the returned visit as approved behind the service's back.
    rewrite = "UPDATE visits.visit_reviews SET decision = $2, reason = $3 WHERE visit_id = $1"
    await fetchval(db, rewrite, visit_id, "approve", None)
    try:
        broken = await verify_loan(system, job.loan_id)
        assert broken["intact"] is False
        assert broken["first_break"]["visit_id"] == str(visit_id)
        assert "review" in broken["first_break"]["reason"]
    finally:
        await fetchval(db, rewrite, visit_id, "return", "photo missing")
    assert (await verify_loan(system, job.loan_id))["intact"] is True

    # Or only flips the state the lists filter on.
    flip = "UPDATE visits.visits SET review_state = $2 WHERE visit_id = $1"
    await fetchval(db, flip, visit_id, "approved")
    try:
        broken = await verify_loan(system, job.loan_id)
        assert broken["intact"] is False
        assert "review_state" in broken["first_break"]["reason"]
    finally:
        await fetchval(db, flip, visit_id, "returned")
    assert (await verify_loan(system, job.loan_id))["intact"] is True


async def test_review_state_filter_pages_a_supervisors_queue(system: System) -> None:
    job = await assign(system)
    ids = [(await recorded(system, job, visit_body(job.loan_id)))["visit_id"] for _ in range(3)]
    approved = await review(system, job.supervisor, ids[1], "approve", None)
    assert approved.status_code == 200, approved.text

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {
            "loan_id": job.loan_id,
            "review_state": "pending",
            "limit": 1,
        }
        if cursor:
            params["cursor"] = cursor
        page = await system.visits.get("/v1/visits", params=params, headers=job.supervisor)
        assert page.status_code == 200, page.text
        seen += [v["visit_id"] for v in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [ids[0], ids[2]]
    only = await system.visits.get(
        "/v1/visits",
        params={"loan_id": job.loan_id, "review_state": "approved"},
        headers=job.headers,
    )
    assert [v["visit_id"] for v in only.json()["items"]] == [ids[1]]
    bad = await system.visits.get(
        "/v1/visits", params={"review_state": "done"}, headers=job.headers
    )
    assert_problem(bad, 422)


async def test_concurrent_reviews_and_corrections_of_one_version_decide_once(
    system: System,
) -> None:
    job = await assign(system)
    body = visit_body(job.loan_id)
    reviewed = (await recorded(system, job, body))["visit_id"]
    checkers = [supervisor(job.region, sub=f"sup-{n}") for n in range(4)]
    decisions = await asyncio.gather(
        *(review(system, who, reviewed, "return", f"reason {n}") for n, who in enumerate(checkers))
    )
    assert sorted(r.status_code for r in decisions) == [200, 409, 409, 409]
    rows = "SELECT count(*) FROM visits.visit_reviews WHERE visit_id = $1"
    assert await fetchval(system.database_url, rows, uuid.UUID(reviewed)) == 1

    corrections = await asyncio.gather(
        *(correct(system, job, reviewed, correction_of(body), new_id("K")) for _ in range(4))
    )
    assert sorted(r.status_code for r in corrections) == [201, 409, 409, 409]
    versions = "SELECT count(*) FROM visits.visits WHERE corrects_visit_id = $1"
    assert await fetchval(system.database_url, versions, uuid.UUID(reviewed)) == 1
    verified = await verify_loan(system, job.loan_id)
    assert (verified["intact"], verified["entries_checked"]) == (True, 3)
