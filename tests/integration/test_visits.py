"""Visits against the real database, broker and scheduler: capture, idempotent retries,
task ownership, the `visit-completed` event and reading visits back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.visits import main as visits_main
from services.visits.settings import VisitsSettings
from shared.auth import issue_token
from shared.devstack import free_port
from shared.events import VisitCompleted
from shared.settings import DEV_JWT_SECRET
from tests.integration.conftest import System
from tests.support import (
    CLEAN_FINDINGS,
    CORE_BANKING,
    PHONE_FINDINGS,
    auth,
    dispatched,
    eventually,
    fetchval,
    new_id,
    read_topic,
    register_agent,
    register_loan,
    supervisor,
    upload_photo,
)

# A supervisor's token without the region it oversees.
SUPERVISOR = auth("supervisor", "sup-1")
PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Assignment:
    """An agent with a loan in its own region, and the loan's first task (the agent's)."""

    agent_id: str
    loan_id: str
    task: dict[str, Any]
    region: str

    @property
    def headers(self) -> dict[str, str]:
        return auth("agent", self.agent_id)

    @property
    def supervisor(self) -> dict[str, str]:
        """The supervisor of the loan's region."""
        return supervisor(self.region)

    @property
    def task_id(self) -> str:
        return str(self.task["task_id"])


async def assign(system: System) -> Assignment:
    region = new_id("R")
    agent_id = await register_agent(system.scheduler, region)
    loan_id = await register_loan(system.scheduler, region)
    await dispatched(system.scheduler, loan_id)
    tasks = await system.scheduler.get(
        "/v1/tasks", params={"loan_id": loan_id}, headers=auth("agent", agent_id)
    )
    assert tasks.status_code == 200, tasks.text
    first = tasks.json()["items"][0]
    assert first["agent_id"] == agent_id
    return Assignment(agent_id, loan_id, first, region)


def visit_body(loan_id: str, task_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    started = datetime.now(UTC) - timedelta(minutes=20)
    body: dict[str, Any] = {
        "task_id": task_id,
        "loan_id": loan_id,
        "method": "phone",
        "outcome": "completed",
        "started_at": started.isoformat(),
        "ended_at": (started + timedelta(minutes=12)).isoformat(),
        "findings": dict(PHONE_FINDINGS),
        "notes": "借款人在家，车辆停在小区",
    }
    return body | overrides


async def post_visit(
    system: System, headers: dict[str, str], body: dict[str, Any], key: str | None = None
) -> httpx.Response:
    return await system.visits.post(
        "/v1/visits", json=body, headers=headers | {"Idempotency-Key": key or new_id("K")}
    )


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    return problem


async def test_a_visit_of_an_own_task_is_published_and_completes_the_task(system: System) -> None:
    job = await assign(system)
    body = visit_body(job.loan_id, job.task_id)

    created = await post_visit(system, job.headers, body)
    assert created.status_code == 201, created.text
    visit = created.json()
    visit_id = visit["visit_id"]
    assert visit["agent_id"] == job.agent_id
    assert visit["created_at"]
    for name in ("task_id", "loan_id", "method", "outcome", "findings", "notes"):
        assert visit[name] == body[name], name
    for name in ("started_at", "ended_at"):
        assert datetime.fromisoformat(visit[name]) == datetime.fromisoformat(body[name])
    assert visit["geo"] is None

    event = await read_topic(
        system.bootstrap, "visit-completed", lambda e: e.get("visit_id") == visit_id
    )
    parsed = VisitCompleted.model_validate(event)
    assert parsed.event_type == "visit-completed"
    assert (parsed.loan_id, str(parsed.task_id), parsed.agent_id) == (
        job.loan_id,
        job.task_id,
        job.agent_id,
    )
    assert (parsed.method, parsed.outcome) == ("phone", "completed")
    assert parsed.started_at == datetime.fromisoformat(body["started_at"])
    assert parsed.ended_at == datetime.fromisoformat(body["ended_at"])
    assert parsed.findings.model_dump() == body["findings"]
    assert "notes" not in event  # free text stays in the visits service

    async def task_completed() -> dict[str, Any] | None:
        task = (await system.scheduler.get(f"/v1/tasks/{job.task_id}", headers=job.headers)).json()
        return task if task["status"] == "completed" else None

    assert (await eventually(task_completed))["visit_id"] == visit_id

    async def next_task() -> list[dict[str, Any]]:
        response = await system.scheduler.get(
            "/v1/tasks", params={"loan_id": job.loan_id, "status": "open"}, headers=job.headers
        )
        return [t for t in response.json()["items"] if t["task_id"] != job.task_id]

    [planned] = await eventually(next_task)
    assert planned["reason"]["inputs"]["last_outcome"] == "completed"

    # The task is done: another capture for it, under a new key, is a conflict.
    again = await post_visit(system, job.headers, visit_body(job.loan_id, job.task_id))
    assert_problem(again, 409)


async def test_a_retry_with_the_same_key_and_body_returns_the_first_visit(system: System) -> None:
    job = await assign(system)
    body = visit_body(job.loan_id, job.task_id)
    key = new_id("K")

    first = await post_visit(system, job.headers, body, key)
    retry = await post_visit(system, job.headers, body, key)
    assert first.status_code == retry.status_code == 201, retry.text
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers

    visit_id = first.json()["visit_id"]
    await read_topic(system.bootstrap, "visit-completed", lambda e: e.get("visit_id") == visit_id)
    sql = "SELECT count(*) FROM visits.outbox WHERE payload->>'visit_id' = $1"
    assert await fetchval(system.database_url, sql, visit_id) == 1

    # Even once the scheduler has completed the task, the retry still gets the first visit.
    async def completed() -> bool:
        task = (await system.scheduler.get(f"/v1/tasks/{job.task_id}", headers=job.headers)).json()
        return bool(task["status"] == "completed")

    await eventually(completed)
    late = await post_visit(system, job.headers, body, key)
    assert (late.status_code, late.json()["visit_id"]) == (201, visit_id)


async def test_concurrent_identical_requests_record_one_visit(system: System) -> None:
    job = await assign(system)
    body = visit_body(job.loan_id)  # unplanned: no task
    key = new_id("K")

    responses = await asyncio.gather(
        *(post_visit(system, job.headers, body, key) for _ in range(4))
    )
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.json()["visit_id"] for r in responses}) == 1
    sql = "SELECT count(*) FROM visits.visits WHERE agent_id = $1"
    assert await fetchval(system.database_url, sql, job.agent_id) == 1


async def test_two_captures_of_one_task_at_once_record_one_visit(system: System) -> None:
    job = await assign(system)
    responses = await asyncio.gather(
        *(post_visit(system, job.headers, visit_body(job.loan_id, job.task_id)) for _ in range(2))
    )
    assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
    sql = "SELECT count(*) FROM visits.outbox WHERE payload->>'task_id' = $1"
    assert await fetchval(system.database_url, sql, job.task_id) == 1


async def test_the_same_key_with_another_body_is_a_conflict(system: System) -> None:
    job = await assign(system)
    key = new_id("K")
    first = await post_visit(system, job.headers, visit_body(job.loan_id), key)
    assert first.status_code == 201, first.text

    other = await post_visit(
        system, job.headers, visit_body(job.loan_id, outcome="borrower_unreachable"), key
    )
    problem = assert_problem(other, 409)
    assert "Idempotency-Key" in problem["detail"]

    # The key is the agent's own: another agent may use the same string.
    another = await assign(system)
    reused = await post_visit(system, another.headers, visit_body(another.loan_id), key)
    assert reused.status_code == 201, reused.text


async def test_invalid_captures_name_the_field_and_write_nothing(system: System) -> None:
    job = await assign(system)

    no_geo = await post_visit(
        system, job.headers, visit_body(job.loan_id, method="field", findings=CLEAN_FINDINGS)
    )
    fields = [e["field"] for e in assert_problem(no_geo, 422)["errors"]]
    assert fields == ["body.geo", "body.evidence"]

    body = visit_body(job.loan_id)
    backwards = visit_body(job.loan_id, ended_at=body["started_at"], started_at=body["ended_at"])
    response = await post_visit(system, job.headers, backwards)
    assert [e["field"] for e in assert_problem(response, 422)["errors"]] == ["body.ended_at"]

    no_key = await system.visits.post("/v1/visits", json=body, headers=job.headers)
    fields = [e["field"] for e in assert_problem(no_key, 422)["errors"]]
    assert fields == ["header.Idempotency-Key"]

    field_visit = visit_body(
        job.loan_id,
        method="field",
        geo={"lat": 39.91, "lon": 116.39},
        findings=CLEAN_FINDINGS,
        evidence=[await upload_photo(system.visits, job.headers)],
    )
    ok = await post_visit(system, job.headers, field_visit)
    assert ok.status_code == 201, ok.text
    assert ok.json()["geo"] == {"lat": 39.91, "lon": 116.39}
    sql = "SELECT count(*) FROM visits.visits WHERE loan_id = $1"
    assert await fetchval(system.database_url, sql, job.loan_id) == 1


async def test_a_task_that_is_not_the_agents_own_is_not_found(system: System) -> None:
    job = await assign(system)
    other_agent = auth("agent", new_id("AG"))

    theirs = await post_visit(system, other_agent, visit_body(job.loan_id, job.task_id))
    assert assert_problem(theirs, 404)["detail"] == "task not found"

    other_loan = await post_visit(system, job.headers, visit_body(new_id("L"), job.task_id))
    assert_problem(other_loan, 404)

    unknown = await post_visit(system, job.headers, visit_body(job.loan_id, str(uuid.uuid4())))
    assert_problem(unknown, 404)

    sql = "SELECT count(*) FROM visits.outbox WHERE payload->>'task_id' = $1"
    assert await fetchval(system.database_url, sql, job.task_id) == 0


async def test_a_scheduler_that_is_down_gives_503_and_writes_nothing(system: System) -> None:
    job = await assign(system)
    settings = VisitsSettings(
        env="test",
        database_url=system.database_url,
        scheduler_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        http_retries=1,
        http_timeout_seconds=0.5,
    )
    async with visits_against(settings) as visits:
        response = await visits.post(
            "/v1/visits",
            json=visit_body(job.loan_id, job.task_id),
            headers=job.headers | {"Idempotency-Key": new_id("K")},
        )
    assert_problem(response, 503)
    sql = "SELECT count(*) FROM visits.visits WHERE agent_id = $1"
    assert await fetchval(system.database_url, sql, job.agent_id) == 0


@asynccontextmanager
async def visits_against(settings: VisitsSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = visits_main.build_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://v") as client,
    ):
        yield client


async def test_agents_read_only_their_own_visits(system: System) -> None:
    job = await assign(system)
    created = await post_visit(system, job.headers, visit_body(job.loan_id))
    visit_id = created.json()["visit_id"]

    own = await system.visits.get(f"/v1/visits/{visit_id}", headers=job.headers)
    assert own.status_code == 200
    assert own.json() == created.json()
    for reader in (job.supervisor, auth("ops", "desk"), auth("admin", "root")):
        seen = await system.visits.get(f"/v1/visits/{visit_id}", headers=reader)
        assert seen.status_code == 200, reader

    stranger = auth("agent", new_id("AG"))
    assert_problem(await system.visits.get(f"/v1/visits/{visit_id}", headers=stranger), 404)
    listed = await system.visits.get(
        "/v1/visits", params={"loan_id": job.loan_id}, headers=stranger
    )
    assert listed.json() == {"items": [], "next_cursor": None}


async def test_tokens_and_roles_are_enforced(system: System) -> None:
    body = visit_body(new_id("L"))
    key = {"Idempotency-Key": new_id("K")}
    assert_problem(await system.visits.post("/v1/visits", json=body, headers=key), 401)
    ops = await system.visits.post("/v1/visits", json=body, headers=key | auth("ops", "desk"))
    assert_problem(ops, 403)
    integration = await system.visits.get("/v1/visits", headers=CORE_BANKING)
    assert_problem(integration, 403)
    unknown = await system.visits.get(f"/v1/visits/{uuid.uuid4()}", headers=supervisor("SH"))
    assert_problem(unknown, 404)
    assert_problem(await system.visits.get("/v1/visits", headers=SUPERVISOR), 403)


async def test_visits_of_a_loan_are_listed_page_by_page(system: System) -> None:
    job = await assign(system)
    first = await post_visit(system, job.headers, visit_body(job.loan_id, job.task_id))
    second = await post_visit(
        system, job.headers, visit_body(job.loan_id, outcome="borrower_unreachable", findings={})
    )
    assert first.status_code == second.status_code == 201, second.text

    page = await system.visits.get(
        "/v1/visits", params={"loan_id": job.loan_id, "limit": 1}, headers=job.supervisor
    )
    assert page.status_code == 200, page.text
    assert [v["visit_id"] for v in page.json()["items"]] == [first.json()["visit_id"]]
    cursor = page.json()["next_cursor"]
    assert cursor

    following = await system.visits.get(
        "/v1/visits",
        params={"loan_id": job.loan_id, "limit": 1, "cursor": cursor},
        headers=job.headers,
    )
    assert [v["visit_id"] for v in following.json()["items"]] == [second.json()["visit_id"]]

    forged = await system.visits.get(
        "/v1/visits", params={"cursor": "not-a-cursor"}, headers=job.supervisor
    )
    assert assert_problem(forged, 422)["errors"][0]["field"] == "query.cursor"


# --- who may record a visit on which loan (issue 5, defect 2) -------------------------------


async def test_an_agent_records_unplanned_visits_only_on_loans_it_was_given(
    system: System,
) -> None:
    job = await assign(system)
    # A loan of another region, with its own agent: not this agent's portfolio.
    other_region = new_id("R")
    await register_agent(system.scheduler, other_region)
    elsewhere = await register_loan(system.scheduler, other_region)
    missing_car = visit_body(
        elsewhere,
        method="field",
        geo={"lat": 39.9, "lon": 116.4},
        findings={**CLEAN_FINDINGS, "vehicle_condition": "missing"},
        evidence=[await upload_photo(system.visits, job.headers)],
    )

    foreign = await post_visit(system, job.headers, missing_car)
    assert assert_problem(foreign, 404)["detail"] == "loan not found"
    ghost = await post_visit(system, job.headers, visit_body(new_id("L")))
    assert assert_problem(ghost, 404)["detail"] == "loan not found"
    for loan_id in (elsewhere,):
        sql = "SELECT count(*) FROM visits.outbox WHERE payload->>'loan_id' = $1"
        assert await fetchval(system.database_url, sql, loan_id) == 0

    # Its own loan, even once the task there is done, takes an unplanned visit.
    done = await post_visit(system, job.headers, visit_body(job.loan_id, job.task_id))
    assert done.status_code == 201, done.text

    async def task_completed() -> bool:
        task = await system.scheduler.get(f"/v1/tasks/{job.task_id}", headers=job.headers)
        return bool(task.json()["status"] == "completed")

    await eventually(task_completed)
    unplanned = await post_visit(system, job.headers, visit_body(job.loan_id))
    assert unplanned.status_code == 201, unplanned.text


async def test_a_supervisor_records_visits_only_in_its_region(system: System) -> None:
    job = await assign(system)
    loan = await system.scheduler.get(f"/v1/loans/{job.loan_id}", headers=CORE_BANKING)

    def supervisor_of(region: str) -> dict[str, str]:
        token = issue_token(DEV_JWT_SECRET, "sup-7", "supervisor", region=region)
        return {"Authorization": f"Bearer {token}"}

    own_region, other_region = supervisor_of(loan.json()["region"]), supervisor_of(new_id("R"))

    recorded = await post_visit(system, own_region, visit_body(job.loan_id, job.task_id))
    assert recorded.status_code == 201, recorded.text
    assert recorded.json()["agent_id"] == "sup-7"

    assert_problem(await post_visit(system, other_region, visit_body(job.loan_id)), 404)
    assert_problem(await post_visit(system, SUPERVISOR, visit_body(job.loan_id)), 403)


# --- capture rules per method and outcome (issue 7) ------------------------------------------


async def test_captures_breaking_the_rules_of_their_method_name_each_field(
    system: System,
) -> None:
    job = await assign(system)
    blind_field_visit = visit_body(
        job.loan_id, method="field", findings={**CLEAN_FINDINGS, "vehicle_sighted": None}
    )
    phone_sighting = visit_body(job.loan_id, findings=CLEAN_FINDINGS)
    unreachable_but_verified = visit_body(
        job.loan_id,
        outcome="borrower_unreachable",
        findings={"identity_verified": True, "vehicle_condition": "missing"},
    )
    posing_as_partner = visit_body(job.loan_id, method="third_party", findings={})
    cases = [
        (blind_field_visit, ["body.geo", "body.findings.vehicle_sighted", "body.evidence"]),
        (phone_sighting, ["body.findings.vehicle_sighted"]),
        (
            unreachable_but_verified,
            ["body.findings.identity_verified", "body.findings.vehicle_condition"],
        ),
        (posing_as_partner, ["body.method"]),
    ]
    for body, expected in cases:
        response = await post_visit(system, job.headers, body)
        assert [e["field"] for e in assert_problem(response, 422)["errors"]] == expected

    sql = "SELECT count(*) FROM visits.visits WHERE loan_id = $1"
    assert await fetchval(system.database_url, sql, job.loan_id) == 0

    # A field visit that found the car gone while nobody was home is a valid record.
    nobody_home = visit_body(
        job.loan_id,
        method="field",
        outcome="borrower_unreachable",
        geo={"lat": 31.2, "lon": 121.5},
        findings={"vehicle_sighted": False, "vehicle_condition": "missing"},
    )
    recorded = await post_visit(system, job.headers, nobody_home)
    assert recorded.status_code == 201, recorded.text


async def test_visits_are_filtered_by_method_outcome_and_start(system: System) -> None:
    job = await assign(system)
    now = datetime.now(UTC)

    def at(hours_ago: int, **overrides: Any) -> dict[str, Any]:
        started = now - timedelta(hours=hours_ago)
        times = {"started_at": started.isoformat(), "ended_at": started.isoformat()}
        return visit_body(job.loan_id, **times, **overrides)

    bodies = {
        "call": at(30),
        "no_answer": at(20, outcome="borrower_unreachable", findings={}),
        "inspection": at(
            10,
            method="field",
            geo={"lat": 31.2, "lon": 121.5},
            findings=CLEAN_FINDINGS,
            evidence=[await upload_photo(system.visits, job.headers)],
        ),
    }
    ids = {}
    for name, body in bodies.items():
        response = await post_visit(system, job.headers, body)
        assert response.status_code == 201, response.text
        ids[response.json()["visit_id"]] = name

    async def names(**params: str) -> list[str]:
        response = await system.visits.get(
            "/v1/visits", params={"loan_id": job.loan_id, **params}, headers=job.supervisor
        )
        assert response.status_code == 200, response.text
        return [ids[v["visit_id"]] for v in response.json()["items"]]

    assert await names() == ["call", "no_answer", "inspection"]
    assert await names(method="phone") == ["call", "no_answer"]
    assert await names(outcome="borrower_unreachable") == ["no_answer"]
    window = {
        "started_from": (now - timedelta(hours=25)).isoformat(),
        "started_before": (now - timedelta(hours=10)).isoformat(),
    }
    assert await names(**window) == ["no_answer"]
    assert await names(method="field", outcome="completed") == ["inspection"]
    naive = await system.visits.get(
        "/v1/visits", params={"started_from": "2026-11-30T10:00:00"}, headers=job.supervisor
    )
    assert assert_problem(naive, 422)["errors"][0]["field"] == "query.started_from"
