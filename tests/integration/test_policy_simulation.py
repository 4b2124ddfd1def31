"""`POST /v1/policy/simulate`: a candidate policy's 90-day load against agent capacity, on
the real database, changing nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import yaml

from services.scheduler.visit_policy import DEFAULT_POLICY_FILE
from tests.integration.conftest import System
from tests.support import ADMIN, auth, fetchval, new_id, register_loan, supervisor

YAML = {"content-type": "application/yaml"}


def candidate(**contact_months: int) -> bytes:
    document = yaml.safe_load(DEFAULT_POLICY_FILE.read_text(encoding="utf-8"))
    for tier, months in contact_months.items():
        document["tiers"][tier]["contact_every_months"] = months
    return yaml.safe_dump(document).encode()


def phone_visits(simulation: dict[str, Any], region: str) -> int:
    return sum(
        w["visits"] for w in simulation["load"] if w["region"] == region and w["method"] == "phone"
    )


async def test_a_candidate_policy_is_projected_against_capacity_and_nothing_changes(
    system: System,
) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    # One agent, one visit a day, on the weekday the test runs only (the projection starts
    # today); twelve loans whose first call is overdue.
    response = await system.scheduler.put(
        f"/v1/agents/{new_id('AG')}",
        json={
            "name": "李娜",
            "region": region,
            "methods": ["phone", "field"],
            "daily_capacity": 1,
            "working_days": [today.isoweekday()],
        },
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    for _ in range(12):
        await register_loan(
            system.scheduler, region, grade="A", disbursed_on=today - timedelta(days=400)
        )
    tasks_before = await fetchval(system.database_url, "SELECT count(*) FROM scheduler.visit_tasks")
    policies_before = await fetchval(system.database_url, "SELECT count(*) FROM scheduler.policies")

    shown = await system.scheduler.post(
        "/v1/policy/simulate", content=candidate(), headers=supervisor(region) | YAML
    )
    assert shown.status_code == 200, shown.text
    simulation = shown.json()
    assert simulation["from_day"] == today.isoformat()
    assert simulation["to_day"] == (today + timedelta(days=89)).isoformat()
    first_week = (today - timedelta(days=today.weekday())).isoformat()
    [crowded] = [
        w for w in simulation["over_capacity"] if w["region"] == region and w["week"] == first_week
    ]
    # Every loan is overdue for its call and its field inspection: 24 visits, one slot.
    assert crowded["demand"] >= 24 and crowded["capacity"] == 1
    assert crowded["shortfall"] == crowded["demand"] - 1
    assert all(date.fromisoformat(w["week"]).weekday() == 0 for w in simulation["load"])

    # Monthly contacts for every tier ask for more calls than the defaults.
    monthly = await system.scheduler.post(
        "/v1/policy/simulate",
        content=candidate(high=1, medium=1, low=1),
        headers=ADMIN | YAML,
    )
    assert monthly.status_code == 200, monthly.text
    assert phone_visits(monthly.json(), region) > phone_visits(simulation, region)

    invalid = await system.scheduler.post(
        "/v1/policy/simulate", content=candidate(high=4), headers=ADMIN | YAML
    )
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["field"] == "body.tiers"
    agent = await system.scheduler.post(
        "/v1/policy/simulate", content=candidate(), headers=auth("agent") | YAML
    )
    assert agent.status_code == 403
    # Nothing planned, nothing installed.
    assert (
        await fetchval(system.database_url, "SELECT count(*) FROM scheduler.visit_tasks")
        == tasks_before
    )
    assert (
        await fetchval(system.database_url, "SELECT count(*) FROM scheduler.policies")
        == policies_before
    )
