"""Partners' reports on the real database and broker (issue 7): a report becomes a
`third_party` visit, is chained and published like any visit, reaches the alert rules, and a
resend records nothing new."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.events import VisitCompleted
from tests.integration.conftest import System
from tests.integration.test_alerts import alerts_of
from tests.integration.test_visit_chain import verify_loan
from tests.integration.test_visits import assert_problem
from tests.support import (
    auth,
    eventually,
    fetchval,
    new_id,
    read_topic,
    register_agent,
    register_loan,
)

PARTNER = "gps-partner"
GPS = auth("integration", PARTNER)


def report(loan_id: str, kind: str = "dwell_at_pawn_lot", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "report_id": new_id("R"),
        "partner": PARTNER,
        "kind": kind,
        "loan_id": loan_id,
        "observed_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "details": {
            "position": {"lat": 31.2304, "lon": 121.4737},
            "dwell_minutes": 240,
            "place_name": "宝山二手车市场",
            "place_category": "used_car_lot",
        },
    }
    return body | overrides


async def send(system: System, body: dict[str, Any], headers: dict[str, str] = GPS) -> Any:
    return await system.visits.post("/v1/third-party-reports", json=body, headers=headers)


async def registered_loan(system: System) -> str:
    region = new_id("R")
    await register_agent(system.scheduler, region)
    return await register_loan(system.scheduler, region)


async def test_a_dwell_at_a_pawn_lot_flows_to_a_collateral_alert(system: System) -> None:
    loan_id = await registered_loan(system)
    body = report(loan_id)

    created = await send(system, body)
    assert created.status_code == 201, created.text
    recorded = created.json()
    visit = recorded["visit"]
    assert (recorded["report_id"], recorded["kind"]) == (body["report_id"], "dwell_at_pawn_lot")
    given = {k: v for k, v in recorded["details"].items() if v is not None}
    assert given == body["details"]
    assert (visit["method"], visit["agent_id"], visit["loan_id"]) == (
        "third_party",
        PARTNER,
        loan_id,
    )
    assert visit["findings"]["encumbrance_detected"] is True
    assert visit["geo"] == body["details"]["position"]

    event = await read_topic(
        system.bootstrap, "visit-completed", lambda e: e.get("visit_id") == visit["visit_id"]
    )
    published = VisitCompleted.model_validate(event)
    assert (published.method, published.agent_id) == ("third_party", PARTNER)
    assert published.findings.encumbrance_detected is True

    async def encumbered() -> list[dict[str, Any]]:
        return [a for a in await alerts_of(system, loan_id) if a["rule"] == "collateral_encumbered"]

    [alert] = await eventually(encumbered)
    assert (alert["severity"], alert["recommended_action"]) == ("critical", "repossession_review")

    # Part of the loan's tamper-evident record like any visit.
    proof = await system.visits.get(
        f"/v1/visits/{visit['visit_id']}/proof", headers=auth("ops", "desk")
    )
    assert (proof.status_code, proof.json()["seq"]) == (200, 1)


async def test_a_resent_report_records_nothing_new(system: System) -> None:
    loan_id = await registered_loan(system)
    body = report(loan_id, "court_judgment", details={"court": "上海市浦东新区人民法院"})

    responses = await asyncio.gather(*(send(system, body) for _ in range(4)))
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.json()["visit"]["visit_id"] for r in responses}) == 1
    assert sum("idempotent-replayed" in r.headers for r in responses) == 3
    later = await send(system, body)
    assert (later.status_code, later.headers["idempotent-replayed"]) == (201, "true")
    assert later.json() == responses[0].json()
    assert later.json()["visit"]["findings"]["repayment_difficulty"] is True

    visit_id = later.json()["visit"]["visit_id"]
    sql = "SELECT count(*) FROM visits.outbox WHERE payload->>'visit_id' = $1"
    assert await fetchval(system.database_url, sql, visit_id) == 1
    sql = "SELECT count(*) FROM visits.third_party_reports WHERE loan_id = $1"
    assert await fetchval(system.database_url, sql, loan_id) == 1

    # The same id for another observation is the partner's mistake, not a resend.
    reused = await send(system, body | {"kind": "device_offline"})
    assert "report_id" in assert_problem(reused, 409)["detail"]
    # Another partner's ids are its own.
    other = await send(
        system, body | {"partner": "bureau-1"}, headers=auth("integration", "bureau-1")
    )
    assert other.status_code == 201, other.text
    assert other.json()["visit"]["visit_id"] != visit_id


async def test_reports_are_refused_with_the_field_at_fault(system: System) -> None:
    loan_id = await registered_loan(system)

    impersonated = await send(system, report(loan_id, partner="bureau-1"))
    assert assert_problem(impersonated, 403)["errors"][0]["field"] == "body.partner"
    unknown_loan = await send(system, report(new_id("L")))
    assert assert_problem(unknown_loan, 404)["detail"] == "loan not found"
    as_agent = await send(system, report(loan_id), headers=auth("agent", "AG-1"))
    assert_problem(as_agent, 403)

    bad_kind = await send(system, report(loan_id, kind="rumour"))
    assert [e["field"] for e in assert_problem(bad_kind, 422)["errors"]] == ["body.kind"]
    unbounded = report(loan_id, details={"dwell_minutes": 10**9, "raw": "x"})
    fields = {e["field"] for e in assert_problem(await send(system, unbounded), 422)["errors"]}
    assert fields == {"body.details.dwell_minutes", "body.details.raw"}
    future = report(loan_id, observed_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    [error] = assert_problem(await send(system, future), 422)["errors"]
    assert error["field"] == "body.observed_at"

    sql = "SELECT count(*) FROM visits.visits WHERE loan_id = $1"
    assert await fetchval(system.database_url, sql, loan_id) == 0


async def test_a_report_altered_in_the_database_is_found(system: System) -> None:
    loan_id = await registered_loan(system)
    body = report(loan_id, details={**report(loan_id)["details"], "claim_amount": "12000.50"})
    created = await send(system, body)
    assert created.status_code == 201, created.text
    verified = await verify_loan(system, loan_id)
    assert (verified["intact"], verified["entries_checked"]) == (True, 1)

    # The lot the car stood at is moved to a harmless car park.
    await fetchval(
        system.database_url,
        "UPDATE visits.third_party_reports SET details = jsonb_set(details,"
        " '{place_category}', '\"parking\"') WHERE loan_id = $1",
        loan_id,
    )
    verified = await verify_loan(system, loan_id)
    assert verified["intact"] is False
    assert verified["first_break"]["visit_id"] == created.json()["visit"]["visit_id"]
    assert "report" in verified["first_break"]["reason"]
