"""Working the desk, against the real database and broker: the lifecycle as a transition
table with its history, assignment, and ETag / If-Match against lost updates."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from services.alerts.sla import SlaSweep
from shared.db import make_engine, make_session_factory
from shared.vocabulary import Severity
from tests.integration.conftest import System
from tests.support import auth, eventually, new_id, produce, register_loan, repayment_event

OPS = auth("ops", "ops-desk-1")
OTHER = auth("ops", "ops-desk-2")


async def open_alert(
    system: System, producer: AIOKafkaProducer, days_past_due: int = 45
) -> dict[str, Any]:
    loan_id = await register_loan(system.scheduler, new_id("DESK"))
    await produce(producer, repayment_event(loan_id, days_past_due=days_past_due))

    async def raised() -> dict[str, Any] | None:
        response = await system.alerts.get(f"/v1/alerts?loan_id={loan_id}", headers=OPS)
        items: list[dict[str, Any]] = response.json()["items"]
        return items[0] if items else None

    return await eventually(raised)


async def test_an_alert_worked_to_resolution_keeps_every_move_in_its_history(
    system: System, producer: AIOKafkaProducer
) -> None:
    alert = await open_alert(system, producer)
    url = f"/v1/alerts/{alert['alert_id']}"

    assigned = await system.alerts.post(
        f"{url}/assign", json={"assignee": "ops-desk-2"}, headers=OPS
    )
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["assignee"] == "ops-desk-2"
    assert (await system.alerts.post(f"{url}/ack", headers=OTHER)).status_code == 200
    started = await system.alerts.post(f"{url}/start", json={"note": "calling"}, headers=OTHER)
    assert started.json()["status"] == "in_progress"
    plan = {"action": "repayment_plan", "note": "1500/month for 4 months"}
    resolved = await system.alerts.post(f"{url}/resolve", json=plan, headers=OTHER)
    assert resolved.status_code == 200, resolved.text

    detail = (await system.alerts.get(url, headers=OPS)).json()
    moves = [(h["action"], h["who"], h["from_status"], h["to_status"]) for h in detail["history"]]
    assert moves == [
        ("raised", "system", None, "open"),
        ("assigned", "ops-desk-1", "open", "open"),
        ("acknowledged", "ops-desk-2", "open", "acknowledged"),
        ("started", "ops-desk-2", "acknowledged", "in_progress"),
        ("resolved", "ops-desk-2", "in_progress", "resolved"),
    ]
    assert detail["history"][3]["note"] == "calling"
    assert detail["history"][4]["note"] == plan["note"]
    assert detail["history"][0]["source_event_id"] == alert["source_event_id"]


async def test_moves_outside_the_table_are_refused_as_problems(
    system: System, producer: AIOKafkaProducer
) -> None:
    alert = await open_alert(system, producer)
    url = f"/v1/alerts/{alert['alert_id']}"

    early = await system.alerts.post(f"{url}/resolve", json={"action": "no_action"}, headers=OPS)
    assert early.status_code == 409
    assert early.headers["content-type"] == "application/problem+json"
    assert "acknowledged" in early.json()["detail"] and "dismissed" in early.json()["detail"]
    assert (await system.alerts.post(f"{url}/start", json={}, headers=OPS)).status_code == 409

    silent = await system.alerts.post(f"{url}/resolve", json={"action": "dismiss"}, headers=OPS)
    assert silent.status_code == 422
    assert silent.json()["errors"][0]["field"] == "body.note"
    cured = await system.alerts.post(f"{url}/resolve", json={"action": "cured"}, headers=OPS)
    assert cured.status_code == 422
    assert cured.json()["errors"][0]["field"] == "body.action"

    reason = {"action": "dismiss", "note": "posting was a core banking test"}
    dismissed = await system.alerts.post(f"{url}/resolve", json=reason, headers=OPS)
    assert dismissed.json()["status"] == "dismissed"
    closed = await system.alerts.post(f"{url}/assign", json={"assignee": "x"}, headers=OPS)
    assert closed.status_code == 409


async def test_a_write_on_a_stale_version_gets_412_and_one_without_if_match_applies(
    system: System, producer: AIOKafkaProducer
) -> None:
    alert = await open_alert(system, producer)
    url = f"/v1/alerts/{alert['alert_id']}"
    read = await system.alerts.get(url, headers=OPS)
    seen = read.headers["ETag"]
    assert seen == f'"{read.json()["version"]}"'

    # Two people read the same version; the first write wins, the second is told.
    first = await system.alerts.post(
        f"{url}/assign", json={"assignee": "ops-desk-1"}, headers={**OPS, "If-Match": seen}
    )
    assert first.status_code == 200, first.text
    assert first.headers["ETag"] != seen
    stale = await system.alerts.post(
        f"{url}/assign", json={"assignee": "ops-desk-2"}, headers={**OTHER, "If-Match": seen}
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    assert stale.headers["ETag"] == first.headers["ETag"]
    garbage = await system.alerts.post(f"{url}/ack", headers={**OTHER, "If-Match": '"abc"'})
    assert garbage.status_code == 412
    assert (await system.alerts.get(url, headers=OPS)).json()["assignee"] == "ops-desk-1"

    fresh = await system.alerts.post(
        f"{url}/ack", headers={**OTHER, "If-Match": first.headers["ETag"]}
    )
    assert fresh.status_code == 200
    blind = await system.alerts.post(
        f"{url}/assign", json={"assignee": "ops-desk-2"}, headers=OTHER
    )
    assert blind.status_code == 200 and blind.json()["assignee"] == "ops-desk-2"


async def test_an_unacknowledged_critical_alert_goes_to_the_supervisor_queue_at_its_deadline(
    system: System, producer: AIOKafkaProducer
) -> None:
    critical = await open_alert(system, producer, days_past_due=95)
    acked = await open_alert(system, producer, days_past_due=95)
    medium = await open_alert(system, producer, days_past_due=45)
    await system.alerts.post(f"/v1/alerts/{acked['alert_id']}/ack", headers=OPS)
    became = datetime.fromisoformat(critical["severity_since"])
    now = [became + timedelta(hours=3, minutes=59)]
    engine = make_engine(system.database_url)
    sweep = SlaSweep(
        make_session_factory(engine),
        {Severity.CRITICAL: timedelta(hours=4)},
        every_seconds=60,
        clock=lambda: now[0],
    )
    try:
        await sweep.sweep()  # alerts of earlier tests may be due; this one is not
        flagged_before = (
            await system.alerts.get(f"/v1/alerts/{critical['alert_id']}", headers=OPS)
        ).json()
        assert flagged_before["supervisor_queue_at"] is None
        now[0] = became + timedelta(hours=4, seconds=1)  # the clock moves; nobody sleeps
        assert await sweep.sweep() >= 1
        assert await sweep.sweep() == 0  # queued once
    finally:
        await engine.dispose()

    detail = (await system.alerts.get(f"/v1/alerts/{critical['alert_id']}", headers=OPS)).json()
    assert datetime.fromisoformat(detail["supervisor_queue_at"]) == now[0]
    assert detail["status"] == "open"
    entry = detail["history"][-1]
    assert (entry["action"], entry["who"]) == ("supervisor_queue", "system")
    assert "4h00m" in entry["note"] and "critical" in entry["note"]
    for other in (acked, medium):
        seen = (await system.alerts.get(f"/v1/alerts/{other['alert_id']}", headers=OPS)).json()
        assert seen["supervisor_queue_at"] is None
