"""The visit policy as versioned data and the portfolio re-plan, on the real database and
broker (the in-process system's worker runs beside these tests).

The re-plan is run scoped to each test's own region, so the other tests' loans are left as
they were; a policy a test installs is replaced by the shipped defaults when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import policies, policy
from services.scheduler.replan import DailyReplan, replan_portfolio, replan_turn
from services.scheduler.visit_policy import DEFAULT_POLICY_FILE, PolicyInForce, Tier
from shared.db import make_engine, make_session_factory, unit_of_work
from tests.integration.conftest import System
from tests.support import (
    ADMIN,
    auth,
    eventually,
    fetchrow,
    fetchval,
    new_id,
    produce,
    register_agent,
    register_loan,
    visit_event,
)

YAML = {"content-type": "application/yaml"}


@pytest.fixture
async def sessions(system: System) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(system.database_url)
    yield make_session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def defaults_after(system: System) -> AsyncIterator[None]:
    """Whatever a test installs, the shipped defaults are in force after it."""
    yield
    source = DEFAULT_POLICY_FILE.read_text(encoding="utf-8")
    response = await system.scheduler.put(
        "/v1/policy", content=source.encode(), headers=ADMIN | YAML
    )
    assert response.status_code == 201, response.text


async def open_tasks(system: System, region: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(loan, method) -> the open task, of `region`'s loans."""
    conn_url = system.database_url
    rows = await fetchval(
        conn_url,
        "SELECT COALESCE(jsonb_agg(jsonb_build_object('loan_id', t.loan_id, 'method', t.method,"
        " 'due_on', t.due_on, 'reason', t.reason, 'agent_id', t.agent_id,"
        " 'task_id', t.task_id)), '[]') FROM scheduler.visit_tasks AS t"
        " JOIN scheduler.loans AS l USING (loan_id) WHERE l.region = $1 AND t.status = 'open'",
        region,
    )
    return {(r["loan_id"], r["method"]): r for r in json.loads(rows)}


async def in_force(sessions: async_sessionmaker[AsyncSession]) -> PolicyInForce:
    async with unit_of_work(sessions) as session:
        return await policies.current_policy(session)


# --- the policy file through the API --------------------------------------------------------


async def test_the_policy_in_force_is_shown_and_a_new_version_is_validated_and_installed(
    system: System, defaults_after: None
) -> None:
    shown = await system.scheduler.get("/v1/policy", headers=auth("ops"))
    assert shown.status_code == 200, shown.text
    before = shown.json()
    assert before["policy"]["tiers"]["high"]["contact_every_months"] == 1
    assert "first_follow_up" in before["source"]  # the reviewed text, as installed

    document = yaml.safe_load(DEFAULT_POLICY_FILE.read_text(encoding="utf-8"))
    document["tiers"]["high"]["field_every_months"] = 13  # less than once a year
    refused = await system.scheduler.put(
        "/v1/policy", content=yaml.safe_dump(document).encode(), headers=ADMIN | YAML
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in refused.json()["errors"]] == ["body.tiers.high.field_every_months"]
    broken = await system.scheduler.put("/v1/policy", content=b"tiers: [", headers=ADMIN | YAML)
    assert broken.status_code == 422 and broken.json()["errors"][0]["field"] == "body"

    ops = await system.scheduler.put(
        "/v1/policy", content=DEFAULT_POLICY_FILE.read_bytes(), headers=auth("ops") | YAML
    )
    assert ops.status_code == 403

    document["tiers"]["high"]["field_every_months"] = 3
    installed = await system.scheduler.put(
        "/v1/policy", content=yaml.safe_dump(document).encode(), headers=ADMIN | YAML
    )
    assert installed.status_code == 201, installed.text
    assert installed.json()["version"] > before["version"]
    assert installed.json()["installed_by"] == "root"
    now = (await system.scheduler.get("/v1/policy", headers=ADMIN)).json()
    assert now["version"] == installed.json()["version"]
    assert now["policy"]["tiers"]["high"]["field_every_months"] == 3


# --- tiers and the re-plan ------------------------------------------------------------------


async def test_replan_gives_tiers_and_opens_due_routine_tasks_as_the_policy_says(
    system: System, sessions: async_sessionmaker[AsyncSession]
) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    long_ago = today - timedelta(days=400)
    # C, LTV 0.82, 36 months: high. A, disbursed 400 days ago: 22 months left, LTV 0.82: medium.
    high = await register_loan(system.scheduler, region, disbursed_on=today)
    medium = await register_loan(system.scheduler, region, grade="A", disbursed_on=long_ago)
    p = await in_force(sessions)
    tiers = await fetchval(
        system.database_url,
        "SELECT jsonb_object_agg(loan_id, risk_tier) FROM scheduler.loans WHERE region = $1",
        region,
    )
    # Registration already gave each loan its tier.
    assert json.loads(tiers) == {high: "high", medium: "medium"}

    version, changes = await replan_portfolio(sessions, today=today, region=region)
    assert version == p.version
    assert changes.loans == 2 and changes.tiers_changed == 0
    tasks = await open_tasks(system, region)
    horizon = today + timedelta(days=p.rules.planning.horizon_days)
    created = 0
    for loan_id, tier, disbursed in ((high, Tier.HIGH, today), (medium, Tier.MEDIUM, long_ago)):
        plan = policy.routine_visits(
            p,
            tier=tier,
            disbursed_on=disbursed,
            last_visit_on=None,
            last_field_on=None,
            last_third_party_on=None,
        )
        due = [v for v in plan if v.due_on <= horizon or v.rule == "first_follow_up"]
        # Exactly the routine visits due within the horizon have a task (and the first
        # follow-up registration planned), due as the pure policy computes it.
        assert {m for (loan, m) in tasks if loan == loan_id} == {str(v.method) for v in due}
        for visit in due:
            task = tasks[(loan_id, str(visit.method))]
            assert task["due_on"] == visit.due_on.isoformat()
            assert task["reason"]["rule"] == visit.rule
            assert task["reason"]["policy_version"] == p.version
        created += len([v for v in due if v.rule != "first_follow_up"])
    # The old loan is overdue for everything; the new one's monthly third-party check is due.
    assert {m for (loan, m) in tasks if loan == medium} == {"phone", "field", "third_party"}
    assert changes.tasks_created == created

    again = (await replan_portfolio(sessions, today=today, region=region))[1]
    assert (again.tiers_changed, again.tasks_created, again.tasks_replanned) == (0, 0, 0)
    assert (again.tasks_advanced, again.next_due_changed) == (0, 0)


async def test_a_new_policy_version_replans_open_routine_tasks_and_leaves_history(
    system: System, sessions: async_sessionmaker[AsyncSession], defaults_after: None
) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    loan_id = await register_loan(system.scheduler, region, disbursed_on=today)
    document = yaml.safe_load(DEFAULT_POLICY_FILE.read_text(encoding="utf-8"))
    document["first_follow_up"]["after_months"] = 2
    response = await system.scheduler.put(
        "/v1/policy", content=yaml.safe_dump(document).encode(), headers=ADMIN | YAML
    )
    assert response.status_code == 201, response.text
    version = response.json()["version"]

    changes = (await replan_portfolio(sessions, today=today, region=region))[1]
    assert changes.tasks_replanned == 1
    task = (await open_tasks(system, region))[(loan_id, "phone")]
    assert task["due_on"] == policy.add_months(today, 2).isoformat()
    assert task["reason"]["policy_version"] == version
    next_due = await fetchval(
        system.database_url, "SELECT next_due_on FROM scheduler.loans WHERE loan_id = $1", loan_id
    )
    # The soonest open task: the monthly third-party check, which the same run opened if it
    # falls within the re-plan's horizon (a month from today is 28 to 31 days), else the call.
    check_due = policy.add_months(today, 1)
    within = check_due <= today + timedelta(days=document["planning"]["horizon_days"])
    expected = check_due if within else policy.add_months(today, 2)
    soonest = min(t["due_on"] for t in (await open_tasks(system, region)).values())
    assert next_due.isoformat() == soonest == expected.isoformat()


async def test_an_open_routine_task_follows_its_loans_record_and_keeps_what_it_absorbed(
    system: System, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The re-plan compares an open routine task with its plan by what the reason is made
    of (not by building the reason for every task): a changed input re-plans the task, with
    the reason the pure policy gives, and the plans merged into it stay under `also`."""
    region, today = new_id("R"), datetime.now(UTC).date()
    disbursed = today - timedelta(days=400)
    loan_id = await register_loan(system.scheduler, region, grade="A", disbursed_on=disbursed)
    await replan_portfolio(sessions, today=today, region=region)
    field_on = today - timedelta(days=10)
    absorbed = [{"rule": "missed_installment", "inputs": {"installment_no": 7}}]
    # A field inspection on record that left the task open, and a plan the task absorbed.
    assert await fetchval(
        system.database_url,
        "WITH l AS (UPDATE scheduler.loans SET last_field_on = $2 WHERE loan_id = $1"
        " RETURNING loan_id)"
        " UPDATE scheduler.visit_tasks SET reason = reason || jsonb_build_object('also', $3::jsonb)"
        " WHERE loan_id = (SELECT loan_id FROM l) AND method = 'field' AND status = 'open'"
        " RETURNING true",
        loan_id,
        field_on,
        json.dumps(absorbed),
    )

    changes = (await replan_portfolio(sessions, today=today, region=region))[1]
    assert changes.tasks_replanned == 1
    p = await in_force(sessions)
    field = policy.routine_visits(
        p,
        tier=Tier.MEDIUM,
        disbursed_on=disbursed,
        last_visit_on=None,
        last_field_on=field_on,
        last_third_party_on=None,
    )[1]
    task = (await open_tasks(system, region))[(loan_id, "field")]
    assert task["due_on"] == field.due_on.isoformat()
    assert task["reason"] == {
        "rule": "field_inspection",
        "inputs": {"risk_tier": "medium", "since": field_on.isoformat()},
        "policy_version": p.version,
        "also": absorbed,
    }
    assert field.inputs == task["reason"]["inputs"]
    # What was written is what the comparison expects: the next run changes nothing.
    assert (await replan_portfolio(sessions, today=today, region=region))[1].tasks_replanned == 0


async def test_third_party_checks_are_never_dispatched_and_a_partner_report_completes_them(
    system: System, sessions: async_sessionmaker[AsyncSession], producer: AIOKafkaProducer
) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    # An agent able to take the loan's other tasks is never given its third-party check.
    await register_agent(system.scheduler, region)
    loan_id = await register_loan(
        system.scheduler, region, disbursed_on=today - timedelta(days=100)
    )
    await replan_portfolio(sessions, today=today, region=region)
    check = (await open_tasks(system, region))[(loan_id, "third_party")]

    async def field_dispatched() -> bool:
        tasks = await open_tasks(system, region)
        return tasks[(loan_id, "phone")]["agent_id"] is not None

    await eventually(field_dispatched)
    assert (await open_tasks(system, region))[(loan_id, "third_party")]["agent_id"] is None

    report = visit_event(loan_id) | {"method": "third_party", "agent_id": "partner-gps"}
    await produce(producer, report)

    async def completed() -> Any:
        return await fetchval(
            system.database_url,
            "SELECT status FROM scheduler.visit_tasks WHERE task_id = $1 AND status <> 'open'",
            uuid.UUID(str(check["task_id"])),
        )

    assert await eventually(completed) == "completed"
    # The next check is planned by the tier's cadence from the report.
    nxt = await eventually(
        lambda: fetchval(
            system.database_url,
            "SELECT due_on FROM scheduler.visit_tasks"
            " WHERE loan_id = $1 AND method = 'third_party' AND status = 'open'",
            loan_id,
        )
    )
    assert nxt == policy.add_months(today, 1)  # high tier: monthly
    last = await fetchval(
        system.database_url,
        "SELECT last_third_party_on FROM scheduler.loans WHERE loan_id = $1",
        loan_id,
    )
    assert last == today


async def test_bad_findings_and_alerts_move_the_tier_up_and_plan_their_visit(
    system: System, producer: AIOKafkaProducer
) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    # A, LTV 0.82, 22 months left: medium.
    loan_id = await register_loan(
        system.scheduler, region, grade="A", disbursed_on=today - timedelta(days=400)
    )
    await produce(
        producer,
        visit_event(loan_id, findings={"vehicle_condition": "missing", "vehicle_sighted": False}),
    )

    async def tier() -> Any:
        found = await fetchval(
            system.database_url,
            "SELECT risk_tier FROM scheduler.loans WHERE loan_id = $1 AND tier_shift >= 1",
            loan_id,
        )
        return found

    # The finding moves it up one; the alert the alerts service raises on a missing car
    # (high severity) may move it once more: high either way.
    assert await eventually(tier) == "high"
    field = await fetchrow(
        system.database_url,
        "SELECT due_on, reason FROM scheduler.visit_tasks"
        " WHERE loan_id = $1 AND method = 'field' AND status = 'open'",
        loan_id,
    )
    reason = json.loads(field["reason"])
    # The finding asks for a field visit within 7 days; the alert on the missing car asks
    # for one sooner (repossession review, 2 days) when it arrives: the more urgent wins.
    assert reason["rule"] in ("bad_findings", "alert_follow_up"), reason
    if reason["rule"] == "bad_findings":
        assert reason["inputs"]["findings"] == ["vehicle_missing"]
    assert field["due_on"] <= today + timedelta(days=7)


async def test_the_tier_sql_gives_what_the_pure_policy_gives(
    system: System, sessions: async_sessionmaker[AsyncSession]
) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    p = await in_force(sessions)
    loans = {
        await register_loan(system.scheduler, region, grade=grade, disbursed_on=disbursed): (
            grade,
            disbursed,
        )
        for grade in "ABCDE"
        for disbursed in (today, today - timedelta(days=400), today - timedelta(days=1200))
    }
    await replan_portfolio(sessions, today=today, region=region)
    stored = json.loads(
        await fetchval(
            system.database_url,
            "SELECT jsonb_object_agg(loan_id, risk_tier) FROM scheduler.loans WHERE region = $1",
            region,
        )
    )
    expected = {
        loan_id: policy.risk_tier(
            p.rules.risk_tier,
            credit_grade=grade,
            ltv=policy.loan_to_value(Decimal("80000.00"), Decimal("98000.00")),
            remaining_months=policy.remaining_term(36, disbursed, today),
        ).label
        for loan_id, (grade, disbursed) in loans.items()
    }
    assert stored == expected
    # LTV 0.82 always scores, so the grid is medium and high (low: tests/unit).
    assert set(expected.values()) == {"medium", "high"}


async def test_the_worker_replans_once_a_day_and_again_on_a_new_policy_version(
    system: System, sessions: async_sessionmaker[AsyncSession], defaults_after: None
) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    loan_id = await register_loan(
        system.scheduler, region, grade="A", disbursed_on=today - timedelta(days=400)
    )
    day = [today]
    # The worker's loop, checking every 50 ms, on a clock the test moves; scoped to the
    # test's region (the database is shared).
    daily = DailyReplan(
        sessions, system.database_url, period_seconds=0.05, clock=lambda: day[0], region=region
    )
    runs_sql = (
        "SELECT COALESCE(jsonb_agg(jsonb_build_array(run_on, policy_version) ORDER BY run_id),"
        " '[]') FROM scheduler.replan_runs WHERE changes ->> 'region' = $1"
    )

    async def runs(count: int) -> list[Any] | None:
        found: list[Any] = json.loads(await fetchval(system.database_url, runs_sql, region))
        return found if len(found) >= count else None

    version = (await in_force(sessions)).version
    loop = asyncio.create_task(daily.run())
    try:
        assert await eventually(lambda: runs(1)) == [[today.isoformat(), version]]
        await asyncio.sleep(0.5)  # ten checks more the same day: nothing runs again
        assert await runs(2) is None
        day[0] = today + timedelta(days=1)
        second = await eventually(lambda: runs(2))
        assert second[1] == [day[0].isoformat(), version]
        # A new version the same day: re-planned again, by it.
        document = yaml.safe_load(DEFAULT_POLICY_FILE.read_text(encoding="utf-8"))
        document["tiers"]["low"]["contact_every_months"] = 5
        installed = await system.scheduler.put(
            "/v1/policy", content=yaml.safe_dump(document).encode(), headers=ADMIN | YAML
        )
        assert installed.status_code == 201, installed.text
        new_version = installed.json()["version"]
        third = await eventually(lambda: runs(3))
        assert third[2] == [day[0].isoformat(), new_version]
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    # The loan's open routine tasks now carry the new version.
    versions = await fetchval(
        system.database_url,
        "SELECT array_agg(DISTINCT (reason ->> 'policy_version')::int) FROM scheduler.visit_tasks"
        " WHERE loan_id = $1 AND status = 'open'",
        loan_id,
    )
    assert versions == [new_version]


async def test_one_re_plan_at_a_time_the_command_waits_and_the_worker_gives_up(
    system: System,
) -> None:
    async with replan_turn(system.database_url, wait=False) as first:
        assert first
        # The worker's check while a re-plan is under way: it does not start another.
        async with replan_turn(system.database_url, wait=False) as second:
            assert not second
        # The command line waits for the run under way rather than doubling it.
        waiting = asyncio.create_task(_take_turn(system.database_url))
        await asyncio.sleep(0.3)
        assert not waiting.done()
    assert await asyncio.wait_for(waiting, timeout=10)


async def _take_turn(database_url: str) -> bool:
    async with replan_turn(database_url, wait=True) as ours:
        return ours
