"""Set-based planning and the dispatcher against the real database (the in-process system's
worker runs beside these tests, its dispatcher included)."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import planning, policy, repository
from services.scheduler.dispatch import Dispatcher
from shared.db import make_engine, make_session_factory, unit_of_work
from shared.events import RepaymentPosted, VisitCompleted
from shared.kafka import InvalidEvents
from tests.integration.conftest import System
from tests.support import (
    ADMIN,
    dispatched,
    eventually,
    fetchrow,
    fetchval,
    new_id,
    register_loan,
    repayment_event,
    supervisor,
)


@pytest.fixture
async def sessions(system: System) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(system.database_url, pool_size=16)
    yield make_session_factory(engine)
    await engine.dispose()


@contextmanager
def counted(sessions: async_sessionmaker[AsyncSession]) -> Iterator[list[str]]:
    """The SQL statements run on `sessions`' engine while the block runs."""
    seen: list[str] = []
    engine = sessions.kw["bind"].sync_engine

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@asynccontextmanager
async def dispatch_held(system: System) -> AsyncIterator[None]:
    """No dispatcher runs a pass while the block runs: tasks planned in it wait."""
    conn = await asyncpg.connect(system.database_url.replace("+asyncpg", ""))
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtext('scheduler.dispatch'))")
        yield
    finally:
        await conn.close()  # the session's advisory lock goes with it


async def put_agent(system: System, region: str, capacity: int, methods: list[str]) -> str:
    agent_id = new_id("AG")
    response = await system.scheduler.put(
        f"/v1/agents/{agent_id}",
        json={"name": "李娜", "region": region, "methods": methods, "daily_capacity": capacity},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    return agent_id


async def load(system: System, region: str) -> list[tuple[str | None, date, datetime | None]]:
    """(agent, due day, assigned_at) of the open tasks of `region`'s loans."""
    conn = await asyncpg.connect(system.database_url.replace("+asyncpg", ""))
    try:
        rows = await conn.fetch(
            "SELECT t.agent_id, t.due_on, t.assigned_at FROM scheduler.visit_tasks AS t"
            " JOIN scheduler.loans AS l USING (loan_id)"
            " WHERE l.region = $1 AND t.status = 'open'",
            region,
        )
    finally:
        await conn.close()
    return [(r["agent_id"], r["due_on"], r["assigned_at"]) for r in rows]


async def warm(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        await session.execute(text("SELECT pg_sleep(0.05)"))


def posting(loan_id: str, *, dpd: int, at: datetime) -> RepaymentPosted:
    return RepaymentPosted.model_validate(
        repayment_event(loan_id, status="missed", days_past_due=dpd, occurred_at=at)
    )


# --- planning -----------------------------------------------------------------------------


async def test_a_batch_is_planned_in_the_same_few_statements_whatever_its_size(
    system: System, sessions: async_sessionmaker[AsyncSession]
) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    loans = [await register_loan(system.scheduler, region, disbursed_on=today) for _ in range(15)]
    now = datetime.now(UTC)
    earlier, later = now - timedelta(days=3), now
    events = [
        posting(loan, dpd=dpd, at=at) for loan in loans for dpd, at in ((35, earlier), (40, later))
    ]

    ghost = posting(new_id("GHOST"), dpd=10, at=now)
    with pytest.raises(InvalidEvents) as refused:
        async with unit_of_work(sessions) as session:
            await planning.on_repayments(session, [*events[:3], ghost])
    assert refused.value.reasons == {
        ghost.event_id: f"loan {ghost.loan_id} is not registered with the scheduler"
    }

    with counted(sessions) as seen:
        async with unit_of_work(sessions) as session:
            await planning.on_repayments(session, events)
    # Lock the loans, read the policy in force, write the tasks, wake the dispatcher, save
    # the standing: 30 events, two per loan, and no statement per event. Misses move no
    # loan's tier shift, so no tier is recomputed (a shift that moves costs one statement).
    writes = [s for s in seen if s.split()[0].upper() in ("SELECT", "INSERT", "UPDATE", "WITH")]
    assert len(writes) == 5, seen

    for loan_id in loans:
        tasks = {
            t["method"]: t
            for t in (
                await system.scheduler.get(f"/v1/loans/{loan_id}/tasks", headers=ADMIN)
            ).json()["items"]
        }
        assert set(tasks) == {"phone", "field"}  # the first call brought forward, one field
        phone = tasks["phone"]
        assert phone["due_on"] == (earlier.date() + timedelta(days=2)).isoformat()
        assert phone["reason"]["inputs"]["days_past_due"] == 35  # the nearer plan won
        # ... and records the later plan of the batch.
        assert [a["inputs"]["days_past_due"] for a in phone["reason"]["also"]] == [40]
        row = await fetchrow(
            system.database_url,
            "SELECT days_past_due, last_repayment_status, next_due_on FROM scheduler.loans"
            " WHERE loan_id = $1",
            loan_id,
        )
        assert (row["days_past_due"], row["last_repayment_status"]) == (40, "missed")
        assert row["next_due_on"] == earlier.date() + timedelta(days=2)


async def test_a_visit_completes_its_task_and_the_loan_keeps_its_next_and_last_visit(
    system: System, sessions: async_sessionmaker[AsyncSession]
) -> None:
    today = datetime.now(UTC).date()
    loan_id = await register_loan(system.scheduler, new_id("R"), grade="C", disbursed_on=today)
    [task] = (await system.scheduler.get(f"/v1/loans/{loan_id}/tasks", headers=ADMIN)).json()[
        "items"
    ]
    ended = datetime.now(UTC)
    visit = VisitCompleted.model_validate(
        {
            "loan_id": loan_id,
            "visit_id": uuid.uuid4(),
            "task_id": task["task_id"],
            "agent_id": "AG-1",
            "method": "phone",
            "outcome": "completed",
            "started_at": ended - timedelta(minutes=5),
            "ended_at": ended,
            "findings": {},
        }
    )
    async with unit_of_work(sessions) as session:
        await planning.on_visits(session, [visit])

    tasks = (await system.scheduler.get(f"/v1/loans/{loan_id}/tasks", headers=ADMIN)).json()
    by_status = {t["status"]: t for t in tasks["items"]}
    assert by_status["completed"]["task_id"] == task["task_id"]
    assert by_status["completed"]["visit_id"] == str(visit.visit_id)
    # Grade C, LTV 0.82, 36 months to run: high tier, a contact a month later.
    next_due = policy.add_months(ended.date(), 1)
    assert by_status["open"]["due_on"] == next_due.isoformat()
    row = await fetchrow(
        system.database_url,
        "SELECT next_due_on, last_visit_on FROM scheduler.loans WHERE loan_id = $1",
        loan_id,
    )
    assert (row["next_due_on"], row["last_visit_on"]) == (next_due, ended.date())


async def test_a_reschedule_moves_the_loans_next_due_date(system: System) -> None:
    region = new_id("R")
    loan_id = await register_loan(system.scheduler, region)
    [task] = (await system.scheduler.get(f"/v1/loans/{loan_id}/tasks", headers=ADMIN)).json()[
        "items"
    ]
    moved = await system.scheduler.post(
        f"/v1/tasks/{task['task_id']}/reschedule",
        json={"due_on": "2027-03-05"},
        headers=supervisor(region),
    )
    assert moved.status_code == 200, moved.text
    sql = "SELECT next_due_on FROM scheduler.loans WHERE loan_id = $1"
    assert await fetchval(system.database_url, sql, loan_id) == date(2027, 3, 5)


# --- dispatch -----------------------------------------------------------------------------


async def test_one_pass_dispatches_many_tasks_by_room_load_method_and_region(
    system: System,
) -> None:
    region, elsewhere = new_id("R"), new_id("R")
    async with dispatch_held(system):
        callers = sorted([await put_agent(system, region, 4, ["phone"]) for _ in range(3)])
        driver = await put_agent(system, region, 50, ["field"])  # cannot phone
        stranger = await put_agent(system, elsewhere, 50, ["phone"])  # another region
        for _ in range(10):
            await register_loan(system.scheduler, region, disbursed_on=date(2026, 12, 1))
        assert {agent for agent, _, _ in await load(system, region)} == {None}

    async def all_assigned() -> list[Any] | None:
        rows = await load(system, region)
        return rows if all(agent for agent, _, _ in rows) else None

    rows = await eventually(all_assigned, within=10, interval=0.05)
    per_agent = Counter(agent for agent, _, _ in rows)
    # All due 2027-01-01: room first (capacity 4 each), then fewest open, then the id.
    assert per_agent == {callers[0]: 4, callers[1]: 3, callers[2]: 3}
    assert driver not in per_agent and stranger not in per_agent
    assert len({assigned_at for _, _, assigned_at in rows}) == 1  # one pass, one transaction


async def test_concurrent_dispatchers_never_assign_a_task_twice_or_overbook(
    system: System, sessions: async_sessionmaker[AsyncSession]
) -> None:
    region = new_id("R")
    async with dispatch_held(system):
        agents = [await put_agent(system, region, 3, ["phone"]) for _ in range(5)]
        for _ in range(15):  # exactly the room the five have on the day
            await register_loan(system.scheduler, region, disbursed_on=date(2026, 12, 2))
    # Fifteen drains at once (connections opened beforehand, so that they overlap) by five
    # replicas with small batches, racing each other and the worker's own dispatcher.
    await asyncio.gather(*(warm(sessions) for _ in range(15)))
    replicas = [Dispatcher(sessions, system.database_url, batch_size=2) for _ in range(5)]
    counts = await asyncio.gather(*(d.drain() for _ in range(3) for d in replicas))

    async def all_assigned() -> list[Any] | None:
        rows = await load(system, region)
        return rows if all(agent for agent, _, _ in rows) else None

    rows = await eventually(all_assigned, within=10, interval=0.05)
    assert sum(counts) <= 15  # no assignment counted twice
    assert Counter(agent for agent, _, _ in rows) == dict.fromkeys(agents, 3)  # nobody overbooked


async def test_while_one_dispatcher_holds_the_turn_another_assigns_nothing(
    system: System, sessions: async_sessionmaker[AsyncSession]
) -> None:
    region = new_id("R")
    agent = await put_agent(system, region, 5, ["phone"])
    async with unit_of_work(sessions) as holder:
        # The worker's dispatcher may be mid-pass: wait for our turn.
        await eventually(lambda: repository.try_dispatch_lock(holder), within=5, interval=0.01)
        async with unit_of_work(sessions) as replica:
            assert not await repository.try_dispatch_lock(replica)
        loan_id = await register_loan(system.scheduler, region)
        assert await Dispatcher(sessions, system.database_url).dispatch_once() == (0, 0)
        [task] = (await system.scheduler.get(f"/v1/loans/{loan_id}/tasks", headers=ADMIN)).json()[
            "items"
        ]
        assert task["agent_id"] is None
    [task] = await dispatched(system.scheduler, loan_id, within=5)
    assert task["agent_id"] == agent


async def test_tasks_of_a_region_without_agents_wait_until_one_is_added(system: System) -> None:
    region = new_id("R")
    loan_id = await register_loan(system.scheduler, region)
    [task] = (await system.scheduler.get(f"/v1/loans/{loan_id}/tasks", headers=ADMIN)).json()[
        "items"
    ]
    assert task["agent_id"] is None
    agent = await put_agent(system, region, 5, ["phone"])
    [task] = await dispatched(system.scheduler, loan_id, within=5)
    assert task["agent_id"] == agent


async def test_a_new_loans_task_has_its_agent_within_a_second(system: System) -> None:
    region = new_id("R")
    await put_agent(system, region, 200, ["phone", "field"])
    waits = []
    for _ in range(10):
        started = time.monotonic()
        loan_id = await register_loan(system.scheduler, region)
        await dispatched(system.scheduler, loan_id, within=5)
        waits.append(time.monotonic() - started)
    sql = (
        "SELECT max(extract(epoch FROM t.assigned_at - t.created_at)) FROM scheduler.visit_tasks"
        " AS t JOIN scheduler.loans AS l USING (loan_id) WHERE l.region = $1"
    )
    in_database = float(await fetchval(system.database_url, sql, region))
    print(
        f"registration to agent: median {statistics.median(waits) * 1000:.0f} ms,"
        f" max {max(waits) * 1000:.0f} ms; created to assigned (db) max {in_database * 1000:.0f} ms"
    )
    # Woken by the notification, not by the 1 s period.
    assert statistics.median(waits) < 0.5
    assert max(waits) < 2.0


async def test_the_listener_comes_back_after_its_connection_is_killed(
    system: System, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """What a database restart does to the LISTEN connection: it is gone, the dispatcher
    connects again and is woken by notifications as before (the worker's one too)."""
    dispatcher = Dispatcher(sessions, system.database_url, period_seconds=60, probe_seconds=0.2)
    running = asyncio.create_task(dispatcher.run())
    listeners = (
        "SELECT pid FROM pg_stat_activity WHERE query = 'LISTEN \"visit_tasks_awaiting_dispatch\"'"
    )
    conn = await asyncpg.connect(system.database_url.replace("+asyncpg", ""))
    try:
        await asyncio.wait_for(dispatcher.listening.wait(), timeout=5)
        killed = {r["pid"] for r in await conn.fetch(listeners)}
        assert killed
        await conn.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", killed)

        async def listening_again() -> set[int] | None:
            pids = {r["pid"] for r in await conn.fetch(listeners)}
            return pids if dispatcher.listening.is_set() and pids - killed else None

        await eventually(listening_again, within=10, interval=0.05)
        before = dispatcher.notifications
        await conn.execute("SELECT pg_notify('visit_tasks_awaiting_dispatch', '')")
        await eventually(lambda: _true(dispatcher.notifications > before), within=5, interval=0.02)
    finally:
        await conn.close()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def _true(value: bool) -> bool:
    return value
