"""The lists page the same way, and each service's read rules (the tables in
`services/*/repository.py`) hold through every read route."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.integration.conftest import System
from tests.support import (
    ADMIN,
    CORE_BANKING,
    PHONE_FINDINGS,
    auth,
    eventually,
    new_id,
    register_agent,
    register_loan,
    supervisor,
)


@dataclass(frozen=True)
class Portfolio:
    """An agent alone in its region, with its loans' first tasks."""

    agent_id: str
    loan_ids: list[str]
    task_ids: list[str]
    region: str

    @property
    def headers(self) -> dict[str, str]:
        return auth("agent", self.agent_id)


async def portfolio(system: System, loans: int) -> Portfolio:
    region = new_id("R")
    agent_id = await register_agent(system.scheduler, region)
    loan_ids = [await register_loan(system.scheduler, region) for _ in range(loans)]

    async def assigned() -> list[dict[str, Any]] | None:
        page = await system.scheduler.get(
            "/v1/tasks", params={"limit": 200}, headers=auth("agent", agent_id)
        )
        items: list[dict[str, Any]] = page.json()["items"]
        return items if len(items) == loans else None

    tasks = await eventually(assigned)
    assert {t["loan_id"] for t in tasks} == set(loan_ids)
    return Portfolio(agent_id, loan_ids, [t["task_id"] for t in tasks], region)


async def walk(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], limit: int, **params: Any
) -> list[dict[str, Any]]:
    """Every page of a list; each page but the last is full, the last has no cursor."""
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": limit} | ({"cursor": cursor} if cursor else {})
        response = await client.get(url, params=query, headers=headers)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages[-1]["items"]) == limit


def recorded(agent_loan: str) -> dict[str, Any]:
    started = datetime.now(UTC) - timedelta(minutes=30)
    return {
        "loan_id": agent_loan,
        "method": "phone",
        "outcome": "completed",
        "started_at": started.isoformat(),
        "ended_at": (started + timedelta(minutes=5)).isoformat(),
        "findings": dict(PHONE_FINDINGS),
    }


async def test_a_list_that_ends_on_a_full_page_offers_no_further_page(system: System) -> None:
    mine = await portfolio(system, 2)
    [whole] = await walk(system.scheduler, "/v1/tasks", mine.headers, 2)
    assert [t["task_id"] for t in whole["items"]] == mine.task_ids
    assert whole["next_cursor"] is None

    one_by_one = await walk(system.scheduler, "/v1/tasks", mine.headers, 1)
    assert [len(p["items"]) for p in one_by_one] == [1, 1]
    assert [p["items"][0]["task_id"] for p in one_by_one] == mine.task_ids

    for loan_id in mine.loan_ids:
        created = await system.visits.post(
            "/v1/visits",
            json=recorded(loan_id),
            headers=mine.headers | {"Idempotency-Key": new_id("K")},
        )
        assert created.status_code == 201, created.text
    visits = await walk(system.visits, "/v1/visits", mine.headers, 2)
    assert len(visits) == 1 and len(visits[0]["items"]) == 2
    assert [
        len(p["items"])
        for p in await walk(system.visits, "/v1/visits", ADMIN, 1, agent_id=mine.agent_id)
    ] == [1, 1]


async def test_an_agent_reads_its_own_tasks_and_loans_only(system: System) -> None:
    mine = await portfolio(system, 1)
    theirs = await portfolio(system, 1)
    [their_task], [their_loan] = theirs.task_ids, theirs.loan_ids

    # The agent it names is not a filter: it still gets its own list.
    named = await system.scheduler.get(
        "/v1/tasks", params={"agent_id": theirs.agent_id}, headers=mine.headers
    )
    assert [t["task_id"] for t in named.json()["items"]] == mine.task_ids
    for url in (f"/v1/tasks/{their_task}", f"/v1/loans/{their_loan}"):
        assert (await system.scheduler.get(url, headers=mine.headers)).status_code == 404, url
    loan_tasks = await system.scheduler.get(f"/v1/loans/{their_loan}/tasks", headers=mine.headers)
    assert loan_tasks.json() == {"items": [], "next_cursor": None}
    assert (
        await system.scheduler.get(f"/v1/loans/{mine.loan_ids[0]}", headers=mine.headers)
    ).status_code == 200

    # Everyone else reads any task and loan, and filters by agent.
    for reader in (supervisor(new_id("R")), auth("ops", "desk"), CORE_BANKING, ADMIN):
        assert (
            await system.scheduler.get(f"/v1/tasks/{their_task}", headers=reader)
        ).status_code == 200
        assert (
            await system.scheduler.get(f"/v1/loans/{their_loan}", headers=reader)
        ).status_code == 200
        by_agent = await system.scheduler.get(
            "/v1/tasks", params={"agent_id": theirs.agent_id}, headers=reader
        )
        assert [t["task_id"] for t in by_agent.json()["items"]] == theirs.task_ids


async def test_an_agent_reads_its_own_visits_and_the_desk_reads_all(system: System) -> None:
    mine = await portfolio(system, 1)
    theirs = await portfolio(system, 1)
    created = await system.visits.post(
        "/v1/visits",
        json=recorded(theirs.loan_ids[0]),
        headers=theirs.headers | {"Idempotency-Key": new_id("K")},
    )
    assert created.status_code == 201, created.text
    visit_id = created.json()["visit_id"]

    for url in (f"/v1/visits/{visit_id}", f"/v1/visits/{visit_id}/proof"):
        assert (await system.visits.get(url, headers=mine.headers)).status_code == 404, url
        assert (await system.visits.get(url, headers=theirs.headers)).status_code == 200, url
    named = await system.visits.get(
        "/v1/visits", params={"agent_id": theirs.agent_id}, headers=mine.headers
    )
    assert named.json() == {"items": [], "next_cursor": None}
    assert (await system.visits.get("/v1/visits/verify", headers=mine.headers)).status_code == 403

    # The supervisor of the loan's region reads it; one of another region does not.
    elsewhere = supervisor(new_id("R"))
    assert (await system.visits.get(f"/v1/visits/{visit_id}", headers=elsewhere)).status_code == 404
    elsewhere_list = await system.visits.get(
        "/v1/visits", params={"agent_id": theirs.agent_id}, headers=elsewhere
    )
    assert elsewhere_list.json() == {"items": [], "next_cursor": None}
    for reader in (supervisor(theirs.region), auth("ops", "desk"), ADMIN):
        assert (
            await system.visits.get(f"/v1/visits/{visit_id}", headers=reader)
        ).status_code == 200
        listed = await system.visits.get(
            "/v1/visits", params={"agent_id": theirs.agent_id}, headers=reader
        )
        assert [v["visit_id"] for v in listed.json()["items"]] == [visit_id]
    assert (await system.visits.get("/v1/visits", headers=CORE_BANKING)).status_code == 403
