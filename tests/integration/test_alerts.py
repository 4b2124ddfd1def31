"""Alerts against the real database and broker: rules raised from repayment postings and
visits, `alert-raised` through the outbox, dead letters, and the operations triage API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from tests.alerts_support import loan_registered_event
from tests.integration.conftest import System
from tests.support import (
    ADMIN,
    auth,
    eventually,
    new_id,
    produce,
    read_topic,
    register_loan,
    repayment_event,
    visit_event,
)

OPS = auth("ops", "ops-desk-1")


async def alerts_of(system: System, loan_id: str, query: str = "") -> list[dict[str, Any]]:
    response = await system.alerts.get(f"/v1/alerts?loan_id={loan_id}{query}", headers=OPS)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def wait_for_alerts(system: System, loan_id: str, count: int) -> list[dict[str, Any]]:
    async def raised() -> list[dict[str, Any]] | None:
        alerts = await alerts_of(system, loan_id)
        return alerts if len(alerts) >= count else None

    return await eventually(raised)


def verdict(alert: dict[str, Any]) -> tuple[str, str, str, str]:
    """What a rule decided: rule, category, severity and recommended action."""
    return (alert["rule"], alert["category"], alert["severity"], alert["recommended_action"])


async def raise_one(system: System, producer: AIOKafkaProducer) -> dict[str, Any]:
    """A fresh open dpd_90 alert on a new loan."""
    loan_id = await register_loan(system.scheduler, new_id("R"))
    await produce(producer, repayment_event(loan_id, days_past_due=95))
    return (await wait_for_alerts(system, loan_id, 1))[-1]


# --- raising alerts -----------------------------------------------------------------------


async def test_missed_installment_at_95_dpd_raises_critical_alert_and_announces_it(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = await register_loan(system.scheduler, new_id("R"))
    event = repayment_event(loan_id, status="missed", days_past_due=95, amount_due="3000.00")
    await produce(producer, event)

    [alert] = await wait_for_alerts(system, loan_id, 1)
    assert verdict(alert) == ("dpd_90", "repayment", "critical", "legal_review")
    assert alert["status"] == "open"
    assert alert["source_event_id"] == event["event_id"]
    assert "95 days past due" in alert["reason"] and "3000.00" in alert["reason"]

    raised = await read_topic(
        system.bootstrap, "alert-raised", lambda r: r.get("alert_id") == alert["alert_id"]
    )
    assert raised["event_type"] == "alert-raised"
    assert raised["loan_id"] == loan_id
    assert raised["source_event_id"] == event["event_id"]
    assert verdict(raised) == verdict(alert)
    assert raised["event_id"] != event["event_id"]


async def test_redelivered_repayment_raises_no_second_alert(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = await register_loan(system.scheduler, new_id("R"))
    event = repayment_event(loan_id, status="missed", days_past_due=95)
    await produce(producer, event)
    await wait_for_alerts(system, loan_id, 1)

    await produce(producer, event)  # the same event_id again
    # A later posting on the same loan (same partition) proves the duplicate was consumed.
    await produce(producer, repayment_event(loan_id, status="partial", days_past_due=3))
    alerts = await wait_for_alerts(system, loan_id, 2)

    assert sorted(a["rule"] for a in alerts) == ["dpd_90", "partial_payment"]
    assert len(await alerts_of(system, loan_id, "&rule=dpd_90")) == 1


async def test_unparseable_and_invalid_events_go_to_dead_letter_and_consuming_goes_on(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = await register_loan(system.scheduler, new_id("R"))
    garbage = f"not json {loan_id}".encode()
    incomplete = {
        "event_id": str(uuid.uuid4()),
        "event_type": "repayment-posted",
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "loan_id": loan_id,
        "status": "missed",
    }
    await producer.send_and_wait("repayment-posted", garbage, key=loan_id.encode())
    await produce(producer, incomplete)
    after = repayment_event(loan_id, status="missed", days_past_due=10)
    await produce(producer, after)

    # Behind the bad records on the same partition, the valid posting is still applied.
    [alert] = await wait_for_alerts(system, loan_id, 1)
    assert (alert["rule"], alert["source_event_id"]) == ("dpd_1", after["event_id"])

    dead = await read_topic(
        system.bootstrap, "repayment-posted.dlq", lambda r: r.get("payload") == garbage.decode()
    )
    assert dead["source_topic"] == "repayment-posted"
    assert dead["reason"].startswith("unparseable event")
    dead = await read_topic(
        system.bootstrap,
        "repayment-posted.dlq",
        lambda r: incomplete["event_id"] in r.get("payload", ""),
    )
    assert dead["reason"].startswith("invalid event")
    assert "installment_no" in dead["reason"]


async def test_ride_hailing_on_a_private_loan_raises_vehicle_misuse(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = await register_loan(system.scheduler, new_id("R"), agreed_usage="private")
    event = visit_event(loan_id, findings={"vehicle_usage": "ride_hailing"})
    await produce(producer, event)

    [alert] = await wait_for_alerts(system, loan_id, 1)
    assert verdict(alert) == ("vehicle_misuse", "vehicle", "high", "field_visit")
    assert alert["source_event_id"] == event["event_id"]
    assert "ride_hailing" in alert["reason"] and "private" in alert["reason"]


async def test_usage_as_agreed_raises_nothing(system: System, producer: AIOKafkaProducer) -> None:
    loan_id = await register_loan(system.scheduler, new_id("R"), agreed_usage="ride_hailing")
    await produce(producer, visit_event(loan_id, findings={"vehicle_usage": "ride_hailing"}))
    # A refused visit behind it on the same partition shows the first was consumed.
    await produce(producer, visit_event(loan_id, outcome="refused"))
    [alert] = await wait_for_alerts(system, loan_id, 1)
    assert alert["rule"] == "visit_refused"


async def test_alerts_are_raised_without_asking_the_scheduler(
    system: System, producer: AIOKafkaProducer
) -> None:
    # The alerts worker has no way to reach the scheduler: the loan's facts come only from
    # `loan-registered`, here produced by the test for a loan the scheduler never saw, as
    # if the scheduler had announced it and then gone down.
    loan_id = new_id("NOSCHED")
    assert (await system.scheduler.get(f"/v1/loans/{loan_id}", headers=ADMIN)).status_code == 404
    await produce(producer, loan_registered_event(loan_id, agreed_usage="private"))
    posting = repayment_event(loan_id, status="missed", days_past_due=95)
    visit = visit_event(loan_id, findings={"vehicle_usage": "lent_out"})
    await produce(producer, posting)
    await produce(producer, visit)

    alerts = await wait_for_alerts(system, loan_id, 2)
    assert sorted(verdict(a) for a in alerts) == [
        ("dpd_90", "repayment", "critical", "legal_review"),
        ("vehicle_misuse", "vehicle", "high", "field_visit"),
    ]


# --- triage -------------------------------------------------------------------------------


async def test_ack_then_resolve_records_who_and_when_and_closed_stays_closed(
    system: System, producer: AIOKafkaProducer
) -> None:
    alert = await raise_one(system, producer)
    url = f"/v1/alerts/{alert['alert_id']}"

    acked = await system.alerts.post(f"{url}/ack", headers=OPS)
    assert acked.status_code == 200, acked.text
    assert acked.json()["status"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == "ops-desk-1"
    again = await system.alerts.post(f"{url}/ack", headers=ADMIN)
    assert again.status_code == 200
    assert again.json() == acked.json()  # the first acknowledgement stands

    plan = {"action": "repayment_plan", "note": "borrower agreed to pay 1500/month for 4 months"}
    resolved = await system.alerts.post(f"{url}/resolve", json=plan, headers=OPS)
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert body["status"] == "resolved"
    assert (body["resolution_action"], body["resolution_note"]) == (plan["action"], plan["note"])
    assert body["resolved_by"] == "ops-desk-1"
    assert datetime.fromisoformat(body["resolved_at"]) >= datetime.fromisoformat(
        body["acknowledged_at"]
    )
    read = (await system.alerts.get(url, headers=OPS)).json()
    assert {k: v for k, v in read.items() if k != "history"} == body

    for path, payload in (("resolve", plan), ("ack", None)):
        conflict = await system.alerts.post(f"{url}/{path}", json=payload, headers=OPS)
        assert conflict.status_code == 409
        assert conflict.headers["content-type"] == "application/problem+json"
        assert conflict.json()["status"] == 409


async def test_dismiss_closes_an_open_alert_as_dismissed(
    system: System, producer: AIOKafkaProducer
) -> None:
    alert = await raise_one(system, producer)
    dismissed = await system.alerts.post(
        f"/v1/alerts/{alert['alert_id']}/resolve",
        json={"action": "dismiss", "note": "posting was reversed by core banking"},
        headers=OPS,
    )
    assert dismissed.status_code == 200, dismissed.text
    assert dismissed.json()["status"] == "dismissed"
    assert dismissed.json()["resolution_action"] == "dismiss"
    assert dismissed.json()["acknowledged_at"] is None


async def test_roles_and_errors_are_problem_json(
    system: System, producer: AIOKafkaProducer
) -> None:
    alert = await raise_one(system, producer)
    url = f"/v1/alerts/{alert['alert_id']}"

    assert (await system.alerts.get(url)).status_code == 401
    assert (await system.alerts.get(url, headers=auth("agent", "AG-1"))).status_code == 403
    supervisor = auth("supervisor", "sup-1")
    assert (await system.alerts.get(url, headers=supervisor)).status_code == 200
    watched_only = await system.alerts.post(f"{url}/ack", headers=supervisor)
    assert watched_only.status_code == 403
    assert watched_only.headers["content-type"] == "application/problem+json"

    missing = await system.alerts.get(f"/v1/alerts/{uuid.uuid4()}", headers=OPS)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    unknown_action = await system.alerts.post(
        f"{url}/resolve", json={"action": "write_off"}, headers=OPS
    )
    assert unknown_action.status_code == 422
    assert unknown_action.json()["errors"][0]["field"] == "body.action"
    bad_cursor = await system.alerts.get("/v1/alerts?cursor=nonsense", headers=OPS)
    assert bad_cursor.status_code == 422


async def test_filters_and_cursor_pages(system: System, producer: AIOKafkaProducer) -> None:
    loan_id = await register_loan(system.scheduler, new_id("R"))
    await produce(producer, repayment_event(loan_id, status="missed", days_past_due=95))
    await produce(producer, repayment_event(loan_id, status="partial", days_past_due=3))
    await wait_for_alerts(system, loan_id, 2)
    await produce(producer, visit_event(loan_id, outcome="refused"))
    alerts = await wait_for_alerts(system, loan_id, 3)
    assert [a["rule"] for a in alerts] == ["dpd_90", "partial_payment", "visit_refused"]

    critical = await alerts_of(system, loan_id, "&severity=critical")
    assert [a["rule"] for a in critical] == ["dpd_90"]
    assert [a["rule"] for a in await alerts_of(system, loan_id, "&category=repayment")] == [
        "dpd_90",
        "partial_payment",
    ]
    await system.alerts.post(f"/v1/alerts/{alerts[2]['alert_id']}/ack", headers=OPS)
    assert [a["rule"] for a in await alerts_of(system, loan_id, "&status=open")] == [
        "dpd_90",
        "partial_payment",
    ]
    acknowledged = await alerts_of(system, loan_id, "&status=acknowledged")
    assert [a["rule"] for a in acknowledged] == ["visit_refused"]

    first = (await system.alerts.get(f"/v1/alerts?loan_id={loan_id}&limit=2", headers=OPS)).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = (
        await system.alerts.get(
            f"/v1/alerts?loan_id={loan_id}&limit=2&cursor={first['next_cursor']}", headers=OPS
        )
    ).json()
    assert second["next_cursor"] is None
    paged = [a["alert_id"] for a in first["items"] + second["items"]]
    assert paged == [a["alert_id"] for a in alerts]
