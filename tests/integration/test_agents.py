"""Agents' working days and absences, dispatch around them, and the agent's work list, on
the real database (the in-process system's worker and its dispatcher run beside these)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import policy, repository
from services.scheduler.dispatch import dispatch_pass
from shared.db import make_engine, make_session_factory, unit_of_work
from tests.integration.conftest import System
from tests.support import (
    ADMIN,
    CORE_BANKING,
    auth,
    dispatched,
    eventually,
    execute,
    fetchval,
    loan_body,
    new_id,
    register_agent,
    register_loan,
    supervisor,
)


@pytest.fixture
async def sessions(system: System) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(system.database_url, pool_size=4)
    yield make_session_factory(engine)
    await engine.dispose()


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


async def test_a_task_moved_to_its_agents_working_day_moves_its_loans_next_due_date(
    system: System,
) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    due = policy.add_months(today, 1)  # the first call of a loan disbursed today
    # The agent works only the weekday after the due date's: dispatch brings the call
    # forward six days, to the last such day before it.
    weekday = due.isoweekday() % 7 + 1
    agent = await put_agent(system, new_id("AG"), region, working_days=[weekday])
    assert agent.status_code == 200, agent.text
    loan_id = await register_loan(system.scheduler, region, disbursed_on=today)
    [task] = await dispatched(system.scheduler, loan_id)
    moved = due - timedelta(days=6)
    assert (task["due_on"], task["reason"]["moved_from"]) == (moved.isoformat(), due.isoformat())
    sql = "SELECT next_due_on FROM scheduler.loans WHERE loan_id = $1"
    assert await fetchval(system.database_url, sql, loan_id) == moved


# A pass reads this many tasks; more than that nobody can take are queued first.
BATCH = 3


async def test_tasks_nobody_can_take_never_starve_the_tasks_queued_behind_them(
    system: System, sessions: async_sessionmaker[AsyncSession]
) -> None:
    today = datetime.now(UTC).date()
    stranded_region, ready_region = new_id("R"), new_id("R")
    away = await register_agent(system.scheduler, stranded_region)
    absent = {"starts_on": "2000-01-01", "ends_on": (today + timedelta(days=90)).isoformat()}
    response = await system.scheduler.put(
        f"/v1/agents/{away}/absences", json={"absences": [absent]}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    ready_agent = await register_agent(system.scheduler, ready_region)
    async with unit_of_work(sessions) as session:
        # Our turn to dispatch, held while the tasks are planned: nobody else places them.
        await eventually(lambda: repository.try_dispatch_lock(session), within=5, interval=0.01)
        # Calls due in 2000, the head of the queue, whose only able agent is away from then
        # until long after any day dispatch would look at; then one an agent can take.
        stranded = [
            await register_loan(system.scheduler, stranded_region, disbursed_on=date(2000, 1, 1))
            for _ in range(BATCH + 1)
        ]
        ready = await register_loan(system.scheduler, ready_region, disbursed_on=today)
        read, assigned, _ = await dispatch_pass(session, BATCH)
    assert read == assigned >= 1  # every task read was placed: none of the stranded ones
    [task] = await dispatched(system.scheduler, ready, within=0.5)
    assert task["agent_id"] == ready_agent
    sql = (
        "SELECT count(*) FROM scheduler.visit_tasks"
        " WHERE loan_id = ANY($1::varchar[]) AND agent_id IS NULL"
    )
    assert await fetchval(system.database_url, sql, stranded) == len(stranded)


async def test_a_loan_moved_to_another_region_takes_its_open_task_to_an_agent_there(
    system: System,
) -> None:
    today = datetime.now(UTC).date()
    old_region, new_region = new_id("R"), new_id("R")
    old_agent = await register_agent(system.scheduler, old_region)
    new_agent = await register_agent(system.scheduler, new_region)
    body = loan_body(region=old_region, disbursed_on=today)
    loan_id = new_id("L")
    created = await system.scheduler.put(f"/v1/loans/{loan_id}", json=body, headers=CORE_BANKING)
    assert created.status_code == 201, created.text
    [task] = await dispatched(system.scheduler, loan_id)
    assert task["agent_id"] == old_agent

    moved = await system.scheduler.put(
        f"/v1/loans/{loan_id}", json=body | {"region": new_region}, headers=CORE_BANKING
    )
    assert moved.status_code == 200, moved.text

    async def with_new_agent() -> dict[str, Any] | None:
        task = await task_of(system, loan_id)
        return task if task["agent_id"] == new_agent else None

    assert (await eventually(with_new_agent))["task_id"] == task["task_id"]
    sql = "SELECT region FROM scheduler.visit_tasks WHERE task_id = $1"
    assert await fetchval(system.database_url, sql, uuid.UUID(task["task_id"])) == new_region


async def test_an_agent_moved_to_another_region_hands_its_open_tasks_back(system: System) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    moving = await register_agent(system.scheduler, region)
    loan_id = await register_loan(system.scheduler, region, disbursed_on=today)
    [task] = await dispatched(system.scheduler, loan_id)
    assert task["agent_id"] == moving
    staying = await register_agent(system.scheduler, region)

    transferred = await put_agent(system, moving, new_id("R"))
    assert transferred.status_code == 200, transferred.text

    async def reassigned() -> bool:
        return bool((await task_of(system, loan_id))["agent_id"] == staying)

    assert await eventually(reassigned)


# Waiting tasks in a region no agent covers, written straight into the tables.
UNCOVERED = 2_000


async def test_a_backlog_in_a_region_nobody_covers_is_never_read_by_a_dispatch_pass(
    system: System, sessions: async_sessionmaker[AsyncSession]
) -> None:
    today = datetime.now(UTC).date()
    uncovered, covered = new_id("R"), new_id("R")
    template = await register_loan(system.scheduler, uncovered, disbursed_on=today)
    await register_agent(system.scheduler, covered)
    prefix = new_id("LB")
    await execute(
        system.database_url,
        # Copies of one registered loan, each with a call waiting for an agent.
        f"""
        CREATE TEMP TABLE copies AS
            SELECT * FROM scheduler.loans WHERE loan_id = '{template}';
        INSERT INTO scheduler.loans
            SELECT (jsonb_populate_record(c, jsonb_build_object('loan_id', '{prefix}-' || n))).*
            FROM copies AS c, generate_series(1, {UNCOVERED}) AS n;
        INSERT INTO scheduler.visit_tasks
            (task_id, loan_id, region, method, due_on, status, reason, created_at)
        SELECT gen_random_uuid(), '{prefix}-' || n, '{uncovered}', 'phone',
               current_date - n % 30, 'open', '{{}}', now()
        FROM generate_series(1, {UNCOVERED}) AS n;
        ANALYZE scheduler.visit_tasks;
        """,
    )
    async with unit_of_work(sessions) as session:
        plan = await session.scalar(
            text("EXPLAIN (ANALYZE, FORMAT JSON) " + repository._WAITING.text),
            {
                "limit": 1000,
                "today": today,
                "search_days": policy.SEARCH_DAYS,
                "after_due": repository.QUEUE_START[0],
                "after_id": repository.QUEUE_START[1],
            },
        )
    read = sum(
        node["Actual Rows"] * node["Actual Loops"]
        for node in plan_nodes(plan[0]["Plan"])
        if node.get("Relation Name") == "visit_tasks"
    )
    # Only tasks of covered regions are read: never the backlog, whatever its size.
    assert read < UNCOVERED / 4, read


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)
