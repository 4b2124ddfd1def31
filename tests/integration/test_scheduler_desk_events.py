"""What the risk desk publishes, as the scheduler plans it, on the real database and broker
(the in-process system's scheduler worker consumes): an alert re-published under the same
`alert_id` when it escalates, and approved repayment plans."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler.replan import replan_portfolio
from shared.db import make_engine, make_session_factory
from tests.integration.conftest import System
from tests.support import (
    eventually,
    fetchrow,
    fetchval,
    new_id,
    produce,
    register_loan,
    visit_event,
)


@pytest.fixture
async def sessions(system: System) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(system.database_url, pool_size=4)
    yield make_session_factory(engine)
    await engine.dispose()


def alert_event(
    loan_id: str,
    alert_id: uuid.UUID,
    *,
    rule: str,
    severity: str,
    action: str,
    occurred_at: datetime,
) -> dict[str, Any]:
    """An `alert-raised` as the desk publishes it: each publication a new event id."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "alert-raised",
        "schema_version": 1,
        "occurred_at": occurred_at.isoformat(),
        "loan_id": loan_id,
        "alert_id": str(alert_id),
        "rule": rule,
        "category": "repayment",
        "severity": severity,
        "reason": f"{rule} on the loan",
        "source_event_id": str(uuid.uuid4()),
        "recommended_action": action,
    }


async def open_task(system: System, loan_id: str, method: str) -> Any:
    return await fetchrow(
        system.database_url,
        "SELECT due_on, reason, source_event_id FROM scheduler.visit_tasks"
        " WHERE loan_id = $1 AND method = $2 AND status = 'open'",
        loan_id,
        method,
    )


async def test_an_escalated_alert_is_a_new_plan_on_the_same_alert_and_moves_the_tier_once(
    system: System, producer: AIOKafkaProducer
) -> None:
    region, now = new_id("R"), datetime.now(UTC)
    loan_id = await register_loan(system.scheduler, region, grade="A", disbursed_on=now.date())
    alert_id = uuid.uuid4()
    shift = "SELECT tier_shift FROM scheduler.loans WHERE loan_id = $1"
    raised = alert_event(
        loan_id, alert_id, rule="dpd_30", severity="medium", action="phone_visit",
        occurred_at=now - timedelta(hours=2),
    )  # fmt: skip
    await produce(producer, raised)

    async def called() -> Any:
        task = await open_task(system, loan_id, "phone")
        return task if task and str(task["source_event_id"]) == raised["event_id"] else None

    phone = await eventually(called)
    assert json.loads(phone["reason"])["inputs"]["alert_id"] == str(alert_id)
    assert await fetchval(system.database_url, shift, loan_id) == 0  # medium: no tier move

    # The desk escalates the same alert: a field visit now, and a high alert's tier up.
    worse = alert_event(
        loan_id, alert_id, rule="dpd_60", severity="high", action="field_visit",
        occurred_at=now - timedelta(hours=1),
    )  # fmt: skip
    await produce(producer, worse)

    async def inspected() -> Any:
        return await open_task(system, loan_id, "field")

    field = await eventually(inspected)
    reason = json.loads(field["reason"])
    assert (reason["rule"], reason["inputs"]["escalated_from"]) == ("alert_follow_up", "dpd_30")
    assert str(field["source_event_id"]) == worse["event_id"]
    assert field["due_on"] == (now - timedelta(hours=1)).date() + timedelta(days=7)
    assert await fetchval(system.database_url, shift, loan_id) == 1

    # Re-published after the suppression window, and the escalation delivered again past
    # the inbox (a new event id): the tier moves no further.
    again = alert_event(
        loan_id, alert_id, rule="dpd_60", severity="high", action="field_visit",
        occurred_at=now,
    )  # fmt: skip
    replay = worse | {"event_id": str(uuid.uuid4())}
    await produce(producer, again)
    await produce(producer, replay)
    # Both on the loan's partition, the replay last: once it is applied, both are.
    applied = "SELECT count(*) FROM scheduler.inbox WHERE event_id = $1"

    async def consumed() -> bool:
        found = await fetchval(system.database_url, applied, uuid.UUID(replay["event_id"]))
        return bool(found)

    await eventually(consumed)
    sql = "SELECT occurred_at FROM scheduler.alert_states WHERE alert_id = $1"
    assert await fetchval(system.database_url, sql, alert_id) == now
    assert await fetchval(system.database_url, shift, loan_id) == 1


def plan_event(loan_id: str, due_dates: list[date]) -> dict[str, Any]:
    """A `repayment-plan-approved` as the desk publishes it when a second person approves."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "repayment-plan-approved",
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "loan_id": loan_id,
        "plan_id": str(uuid.uuid4()),
        "alert_id": str(uuid.uuid4()),
        "arrears": "5600.00",
        "total": "8400.00",
        "installments": [{"due_on": d.isoformat(), "amount": "2800.00"} for d in due_dates],
    }


async def consumed(system: System, event: dict[str, Any]) -> None:
    sql = "SELECT count(*) FROM scheduler.inbox WHERE event_id = $1"

    async def claimed() -> bool:
        return bool(await fetchval(system.database_url, sql, uuid.UUID(event["event_id"])))

    await eventually(claimed)


async def test_an_approved_plan_gets_a_call_before_each_installment_one_at_a_time(
    system: System, producer: AIOKafkaProducer, sessions: async_sessionmaker[AsyncSession]
) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    # Grade A, LTV 0.82, 36 months to run: medium, called quarterly; its first call (a
    # month after disbursement) is open.
    loan_id = await register_loan(system.scheduler, region, grade="A", disbursed_on=today)
    installments = [today + timedelta(days=n) for n in (5, 35, 65)]
    approved = plan_event(loan_id, installments)
    await produce(producer, approved)

    async def reminded() -> Any:
        task = await open_task(system, loan_id, "phone")
        return task if json.loads(task["reason"])["rule"] == "repayment_plan_call" else None

    call = await eventually(reminded)
    reason = json.loads(call["reason"])
    # Two days before the first installment; the first follow-up it displaced is kept.
    assert call["due_on"] == today + timedelta(days=3)
    assert reason["inputs"] == {
        "plan_id": approved["plan_id"],
        "installment_due_on": installments[0].isoformat(),
        "days_before": 2,
    }
    assert [also["rule"] for also in reason["also"]] == ["first_follow_up"]
    next_due = "SELECT next_due_on FROM scheduler.loans WHERE loan_id = $1"
    assert await fetchval(system.database_url, next_due, loan_id) == call["due_on"]

    # The approval delivered again (past the inbox: a new event id) changes nothing.
    again = approved | {"event_id": str(uuid.uuid4())}
    await produce(producer, again)
    await consumed(system, again)
    plans = "SELECT count(*) FROM scheduler.repayment_plans WHERE loan_id = $1"
    assert await fetchval(system.database_url, plans, loan_id) == 1
    assert await open_task(system, loan_id, "phone") == call

    # The call is made today; the daily re-plan six days on (the first installment past)
    # opens the call before the second, in place of the quarterly contact.
    [task_id] = await fetchval(
        system.database_url,
        "SELECT array_agg(task_id) FROM scheduler.visit_tasks"
        " WHERE loan_id = $1 AND method = 'phone' AND status = 'open'",
        loan_id,
    )
    made = {**visit_event(loan_id), "method": "phone", "task_id": str(task_id)}
    made["findings"] = {**made["findings"], "vehicle_sighted": None}
    await produce(producer, made)
    await consumed(system, made)
    contact = json.loads((await open_task(system, loan_id, "phone"))["reason"])
    assert contact["rule"] == "routine_contact"
    day = today + timedelta(days=6)
    _, changes = await replan_portfolio(sessions, today=day, region=region)
    assert changes.plan_calls == 1
    second = await open_task(system, loan_id, "phone")
    assert second["due_on"] == installments[1] - timedelta(days=2)
    assert json.loads(second["reason"])["inputs"]["installment_due_on"] == (
        installments[1].isoformat()
    )
    assert await fetchval(system.database_url, next_due, loan_id) == second["due_on"]
    # Re-planned again the same day: that call is open, nothing more to do.
    _, steady = await replan_portfolio(sessions, today=day, region=region)
    assert steady.plan_calls == 0
