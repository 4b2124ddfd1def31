"""Agents' working days and absences, dispatch around them, and the agent's work list, on
the real database (the in-process system's worker and its dispatcher run beside these)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.scheduler import policy
from tests.integration.conftest import System
from tests.support import (
    ADMIN,
    auth,
    dispatched,
    eventually,
    new_id,
    register_agent,
    register_loan,
    supervisor,
)


async def put_agent(system: System, agent_id: str, region: str, **fields: Any) -> Any:
    body = {"name": "李娜", "region": region, "methods": ["phone", "field"], "daily_capacity": 8}
    return await system.scheduler.put(f"/v1/agents/{agent_id}", json=body | fields, headers=ADMIN)


async def task_of(system: System, loan_id: str) -> dict[str, Any]:
    [task] = (await system.scheduler.get(f"/v1/loans/{loan_id}/tasks", headers=ADMIN)).json()[
        "items"
    ]
    return dict(task)


async def test_people_do_no_third_party_checks_and_working_days_are_weekdays(
    system: System,
) -> None:
    region = new_id("R")
    partner = await put_agent(system, new_id("AG"), region, methods=["third_party"])
    assert partner.status_code == 422
    assert [e["field"] for e in partner.json()["errors"]] == ["body.methods"]
    sunday = await put_agent(system, new_id("AG"), region, working_days=[8])
    assert sunday.status_code == 422
    assert sunday.json()["errors"][0]["field"].startswith("body.working_days")
    ok = await put_agent(system, new_id("AG"), region, working_days=[5, 1, 2])
    assert ok.status_code == 200 and ok.json()["working_days"] == [1, 2, 5]


async def test_an_absent_agents_tasks_go_to_another_and_nothing_is_due_while_away(
    system: System,
) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    first = await register_agent(system.scheduler, region)
    loan_id = await register_loan(system.scheduler, region, disbursed_on=today)
    [task] = await dispatched(system.scheduler, loan_id)
    assert task["agent_id"] == first
    due = date.fromisoformat(task["due_on"])
    second = await register_agent(system.scheduler, region)

    away = await system.scheduler.put(
        f"/v1/agents/{first}/absences",
        json={"absences": [{"starts_on": today.isoformat(), "ends_on": due.isoformat()}]},
        headers=supervisor(region),
    )
    assert away.status_code == 200, away.text
    assert away.json()["released_tasks"] == 1

    async def reassigned() -> dict[str, Any] | None:
        task = await task_of(system, loan_id)
        return task if task["agent_id"] == second else None

    moved = await eventually(reassigned)
    assert moved["due_on"] == due.isoformat()  # the other agent works that day

    missing = await system.scheduler.put(
        f"/v1/agents/{new_id('AG')}/absences", json={"absences": []}, headers=ADMIN
    )
    assert missing.status_code == 404
    backwards = await system.scheduler.put(
        f"/v1/agents/{first}/absences",
        json={"absences": [{"starts_on": due.isoformat(), "ends_on": today.isoformat()}]},
        headers=ADMIN,
    )
    assert backwards.status_code == 422 if due > today else backwards.status_code == 200


async def test_a_departed_agents_open_tasks_are_released_to_dispatch(system: System) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    leaving = await register_agent(system.scheduler, region)
    loan_id = await register_loan(system.scheduler, region, disbursed_on=today)
    [task] = await dispatched(system.scheduler, loan_id)
    assert task["agent_id"] == leaving
    staying = await register_agent(system.scheduler, region)

    gone = await put_agent(system, leaving, region, active=False)
    assert gone.status_code == 200, gone.text

    async def reassigned() -> bool:
        return bool((await task_of(system, loan_id))["agent_id"] == staying)

    assert await eventually(reassigned)


async def test_an_agent_sees_overdue_and_todays_tasks_first_and_supervisors_their_region(
    system: System,
) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    agent_id = await register_agent(system.scheduler, region)
    # Disbursed today: its first call is a month away. Disbursed two months ago: overdue.
    later = await register_loan(system.scheduler, region, disbursed_on=today)
    overdue = await register_loan(system.scheduler, region, disbursed_on=today - timedelta(days=62))
    await dispatched(system.scheduler, later)
    await dispatched(system.scheduler, overdue)

    mine = (await system.scheduler.get("/v1/tasks", headers=auth("agent", agent_id))).json()
    assert [t["loan_id"] for t in mine["items"]] == [overdue, later]
    assert [t["overdue"] for t in mine["items"]] == [True, False]
    assert (
        mine["items"][0]["due_on"] == policy.add_months(today - timedelta(days=62), 1).isoformat()
    )

    elsewhere = new_id("R")
    await register_agent(system.scheduler, elsewhere)
    other = await register_loan(system.scheduler, elsewhere, disbursed_on=today)
    await dispatched(system.scheduler, other)
    seen = await system.scheduler.get(
        f"/v1/tasks?region={region}&order=due&limit=200", headers=supervisor(region)
    )
    assert seen.status_code == 200, seen.text
    assert [t["loan_id"] for t in seen.json()["items"]] == [overdue, later]
    assert other not in {t["loan_id"] for t in seen.json()["items"]}
