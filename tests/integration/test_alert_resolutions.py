"""Resolutions as records, against the real database and broker: a repayment plan that
must cover the arrears and needs a second person, announced when approved; a legal case
advanced in order."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from tests.alerts_support import loan_registered_event
from tests.integration.conftest import System
from tests.support import (
    auth,
    eventually,
    fetchval,
    new_id,
    produce,
    read_topic,
    repayment_event,
)

OPS = auth("ops", "ops-desk-1")
OTHER_OPS = auth("ops", "ops-desk-2")
SUPERVISOR = auth("supervisor", "sup-1")


async def alert_in_arrears(
    system: System, producer: AIOKafkaProducer, *postings: dict[str, Any]
) -> dict[str, Any]:
    """The loan's arrears alert once every posting was applied, acknowledged by OPS."""
    loan_id = postings[0]["loan_id"]
    ids = [p["event_id"] for p in postings]
    for posting in postings:
        await produce(producer, posting)

    async def applied() -> bool:
        sql = "SELECT count(*) FROM alerts.repayment_memory WHERE event_id = ANY($1::uuid[])"
        return bool(await fetchval(system.database_url, sql, ids) == len(ids))

    await eventually(applied)
    response = await system.alerts.get(f"/v1/alerts?loan_id={loan_id}", headers=OPS)
    items = response.json()["items"]
    [alert] = [a for a in items if a["family"] == "arrears"]
    found: dict[str, Any] = alert
    return found


async def a_loan(producer: AIOKafkaProducer) -> str:
    loan_id = new_id("PLAN")
    await produce(producer, loan_registered_event(loan_id))
    return loan_id


async def test_a_plan_covers_the_arrears_and_needs_a_second_person(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = await a_loan(producer)
    alert = await alert_in_arrears(
        system,
        producer,
        repayment_event(loan_id, status="missed", days_past_due=40, installment_no=1),
        repayment_event(loan_id, status="partial", days_past_due=40, installment_no=2),
    )
    url = f"/v1/alerts/{alert['alert_id']}"
    early = {
        "alert_id": alert["alert_id"],
        "installments": [{"due_on": "2026-12-20", "amount": "4200.00"}],
    }
    not_taken = await system.alerts.post("/v1/repayment-plans", json=early, headers=OPS)
    assert not_taken.status_code == 409  # nobody has taken the alert yet
    assert (await system.alerts.post(f"{url}/ack", headers=OPS)).status_code == 200

    # 2800 missed + 1400 short on a partial: 4200 CNY of arrears.
    short = {
        "alert_id": alert["alert_id"],
        "installments": [
            {"due_on": "2026-12-20", "amount": "2000.00"},
            {"due_on": "2027-01-20", "amount": "2000.00"},
        ],
        "note": "borrower back at work in December",
    }
    refused = await system.alerts.post("/v1/repayment-plans", json=short, headers=OPS)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "body.installments"
    assert "4200.00" in refused.json()["detail"]

    enough = {
        **short,
        "installments": [*short["installments"], {"due_on": "2027-02-20", "amount": "200.00"}],
    }
    proposed = await system.alerts.post("/v1/repayment-plans", json=enough, headers=OPS)
    assert proposed.status_code == 201, proposed.text
    plan = proposed.json()
    assert (plan["status"], plan["arrears"], plan["total"]) == ("proposed", "4200.00", "4200.00")
    assert (await system.alerts.get(url, headers=OPS)).json()["status"] == "in_progress"
    twice = await system.alerts.post("/v1/repayment-plans", json=enough, headers=OPS)
    assert twice.status_code == 409

    approve = f"/v1/repayment-plans/{plan['plan_id']}/approve"
    own = await system.alerts.post(approve, headers=OPS)
    assert own.status_code == 403
    assert own.headers["content-type"] == "application/problem+json"
    approved = await system.alerts.post(approve, headers=SUPERVISOR)
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["approved_by"]) == ("approved", "sup-1")
    assert (await system.alerts.post(approve, headers=OTHER_OPS)).status_code == 409

    resolved = (await system.alerts.get(url, headers=OPS)).json()
    assert (resolved["status"], resolved["resolution_action"]) == ("resolved", "repayment_plan")
    assert plan["plan_id"] in resolved["resolution_note"]
    assert resolved["history"][-1]["who"] == "sup-1"

    announced = await read_topic(
        system.bootstrap, "repayment-plan-approved", lambda r: r.get("plan_id") == plan["plan_id"]
    )
    assert announced["loan_id"] == loan_id and announced["alert_id"] == alert["alert_id"]
    assert [i["due_on"] for i in announced["installments"]] == [
        "2026-12-20",
        "2027-01-20",
        "2027-02-20",
    ]
    assert announced["total"] == "4200.00"


async def test_a_legal_case_is_advanced_stage_by_stage_in_order(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = await a_loan(producer)
    alert = await alert_in_arrears(
        system, producer, repayment_event(loan_id, status="missed", days_past_due=95)
    )
    await system.alerts.post(f"/v1/alerts/{alert['alert_id']}/ack", headers=OPS)
    opened = await system.alerts.post(
        "/v1/legal-cases", json={"alert_id": alert["alert_id"], "note": "95 DPD"}, headers=OPS
    )
    assert opened.status_code == 201, opened.text
    case = opened.json()
    assert case["stage"] == "referred"
    detail = (await system.alerts.get(f"/v1/alerts/{alert['alert_id']}", headers=OPS)).json()
    assert (detail["status"], detail["resolution_action"]) == ("resolved", "legal_review")
    assert case["case_id"] in detail["resolution_note"]

    advance = f"/v1/legal-cases/{case['case_id']}/advance"
    skipped = await system.alerts.post(advance, json={"to": "judgment"}, headers=OPS)
    assert skipped.status_code == 409 and "filed" in skipped.json()["detail"]
    for stage in ("filed", "judgment", "closed"):
        moved = await system.alerts.post(advance, json={"to": stage, "note": stage}, headers=OPS)
        assert moved.status_code == 200, moved.text
    after = await system.alerts.post(advance, json={"to": "closed"}, headers=OPS)
    assert after.status_code == 409
    final = (await system.alerts.get(f"/v1/legal-cases/{case['case_id']}", headers=OPS)).json()
    assert [s["stage"] for s in final["stages"]] == ["referred", "filed", "judgment", "closed"]
    assert (
        await system.alerts.post(
            "/v1/legal-cases", json={"alert_id": alert["alert_id"]}, headers=OPS
        )
    ).status_code == 409
