"""Alerts with memory, against the real database and broker: one active alert per loan and
rule family, escalated, counted inside the suppression window, cured by a posting; the
loan's story (consecutive misses, unreachable visits); and replays that change nothing."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alerts import rules, rules_admin, service
from shared.db import make_engine, make_session_factory, unit_of_work
from shared.events import LoanRegistered, RepaymentPosted, VisitCompleted
from tests.alerts_support import desk_of, expected_desk, loan_registered_event
from tests.integration.conftest import System
from tests.support import (
    auth,
    eventually,
    fetchval,
    new_id,
    produce,
    read_topic,
    repayment_event,
    visit_event,
)

OPS = auth("ops", "ops-desk-1")


async def alerts_of(system: System, loan_id: str) -> list[dict[str, Any]]:
    response = await system.alerts.get(f"/v1/alerts?loan_id={loan_id}", headers=OPS)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def known_loan(system: System, producer: AIOKafkaProducer, usage: str = "private") -> str:
    """A loan whose facts the alerts service holds (announced as the scheduler would)."""
    loan_id = new_id("MEM")
    await produce(producer, loan_registered_event(loan_id, agreed_usage=usage))

    async def projected() -> bool:
        sql = "SELECT count(*) FROM alerts.loan_facts WHERE loan_id = $1"
        return bool(await fetchval(system.database_url, sql, loan_id))

    await eventually(projected)
    return loan_id


async def applied(system: System, *events: dict[str, Any]) -> None:
    """Wait until the alerts worker has taken these events (its inbox holds them)."""
    ids = [e["event_id"] for e in events]

    async def done() -> bool:
        sql = "SELECT count(*) FROM alerts.inbox WHERE event_id = ANY($1::uuid[])"
        return bool(await fetchval(system.database_url, sql, ids) == len(ids))

    await eventually(done)


async def history_of(system: System, alert_id: str) -> list[dict[str, Any]]:
    rows = await fetchval(
        system.database_url,
        "SELECT coalesce(json_agg(h ORDER BY h.id), '[]') FROM alerts.alert_history h "
        "WHERE alert_id = $1::uuid",
        alert_id,
    )
    history: list[dict[str, Any]] = json.loads(rows)
    return history


async def announced(system: System, alert_id: str) -> list[dict[str, Any]]:
    rows = await fetchval(
        system.database_url,
        "SELECT coalesce(json_agg(payload ORDER BY id), '[]') FROM alerts.outbox "
        "WHERE payload->>'alert_id' = $1",
        alert_id,
    )
    payloads: list[dict[str, Any]] = json.loads(rows)
    return payloads


def _days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


# --- escalation, suppression, cure --------------------------------------------------------


async def test_a_loan_sliding_into_arrears_escalates_one_alert(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = await known_loan(system, producer)
    slide = [
        repayment_event(loan_id, days_past_due=dpd, installment_no=1, occurred_at=_days_ago(ago))
        for dpd, ago in ((5, 90), (35, 60), (65, 30), (95, 0))
    ]
    for event in slide:
        await produce(producer, event)
    await applied(system, *slide)

    [alert] = await alerts_of(system, loan_id)
    assert (alert["rule"], alert["severity"], alert["recommended_action"]) == (
        "dpd_90",
        "critical",
        "legal_review",
    )
    assert (alert["family"], alert["occurrences"], alert["status"]) == ("arrears", 4, "open")
    assert alert["source_event_id"] == slide[0]["event_id"]  # the alert opened with the first
    assert alert["rule_version"] == rules.current().version
    assert alert["facts"]["days_past_due"] == 95

    raised = await read_topic(
        system.bootstrap,
        "alert-raised",
        lambda r: r.get("alert_id") == alert["alert_id"] and r["severity"] == "critical",
    )
    assert raised["source_event_id"] == slide[-1]["event_id"]
    assert raised["rule"] == "dpd_90"
    severities = [a["severity"] for a in await announced(system, alert["alert_id"])]
    assert severities == ["low", "medium", "high", "critical"]
    history = await history_of(system, alert["alert_id"])
    assert [h["action"] for h in history] == ["raised", "escalated", "escalated", "escalated"]
    assert "dpd_60 → dpd_90 (high → critical)" in history[-1]["note"]
    assert history[-1]["source_event_id"] == slide[-1]["event_id"]


async def test_repeats_inside_the_window_are_counted_not_raised_again(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = await known_loan(system, producer)
    repeats = [
        repayment_event(loan_id, days_past_due=dpd, installment_no=2, occurred_at=_days_ago(ago))
        for dpd, ago in ((31, 6), (33, 4), (36, 1))
    ]
    for event in repeats:
        await produce(producer, event)
    await applied(system, *repeats)

    [alert] = await alerts_of(system, loan_id)
    assert (alert["rule"], alert["occurrences"]) == ("dpd_30", 3)
    assert datetime.fromisoformat(alert["last_seen_at"]) == datetime.fromisoformat(
        repeats[-1]["occurred_at"]
    )
    assert len(await announced(system, alert["alert_id"])) == 1
    assert [h["action"] for h in await history_of(system, alert["alert_id"])] == ["raised"]


async def test_a_cure_resolves_the_repayment_alerts_and_a_new_arrear_opens_a_new_one(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = await known_loan(system, producer)
    missed = repayment_event(loan_id, status="partial", days_past_due=40, installment_no=3)
    refused = visit_event(loan_id, outcome="refused")
    await produce(producer, missed)
    await produce(producer, refused)
    await applied(system, missed, refused)
    paid = repayment_event(loan_id, status="paid", days_past_due=0, installment_no=3)
    await produce(producer, paid)
    await applied(system, paid)

    alerts = {a["rule"]: a for a in await alerts_of(system, loan_id)}
    assert set(alerts) == {"dpd_30", "partial_payment", "visit_refused"}
    for rule in ("dpd_30", "partial_payment"):
        cured = alerts[rule]
        assert (cured["status"], cured["resolved_by"], cured["resolution_action"]) == (
            "resolved",
            "system",
            "cured",
        )
        assert paid["event_id"] in cured["resolution_note"]
        [_, entry] = await history_of(system, cured["alert_id"])
        assert (entry["action"], entry["from_status"], entry["to_status"]) == (
            "cured",
            "open",
            "resolved",
        )
    assert alerts["visit_refused"]["status"] == "open"  # not a repayment alert

    again = repayment_event(loan_id, days_past_due=3, installment_no=4)
    await produce(producer, again)
    await applied(system, again)
    arrears = [a for a in await alerts_of(system, loan_id) if a["family"] == "arrears"]
    assert [(a["status"], a["rule"]) for a in arrears] == [
        ("resolved", "dpd_30"),
        ("open", "dpd_1"),
    ]


# --- the loan's story ---------------------------------------------------------------------


async def test_two_consecutive_missed_installments_are_remembered_across_batches(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = await known_loan(system, producer)
    first = repayment_event(loan_id, days_past_due=0, installment_no=5)
    await produce(producer, first)
    await applied(system, first)
    second = repayment_event(loan_id, days_past_due=31, installment_no=6)
    await produce(producer, second)
    await applied(system, second)

    by_rule = {a["rule"]: a for a in await alerts_of(system, loan_id)}
    assert set(by_rule) == {"dpd_30", "missed_consecutive"}
    assert by_rule["missed_consecutive"]["facts"]["missed_installments"] == [5, 6]
    assert by_rule["missed_consecutive"]["source_event_id"] == second["event_id"]


async def test_unreachable_three_times_in_30_days_escalates_the_contact_alert(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = await known_loan(system, producer)
    visits = [
        visit_event(loan_id, outcome="borrower_unreachable", occurred_at=_days_ago(ago))
        for ago in (40, 20, 10, 1)
    ]
    for visit in visits:
        await produce(producer, visit)
    await applied(system, *visits)

    [alert] = await alerts_of(system, loan_id)
    # 40 days ago is outside the window: the third within 30 days is the last visit.
    assert (alert["rule"], alert["severity"], alert["occurrences"]) == (
        "unreachable_repeated",
        "high",
        4,
    )
    assert alert["facts"]["unreachable_visits"] == 3
    actions = [h["action"] for h in await history_of(system, alert["alert_id"])]
    # Each unreachable visit 10 or more days after the last announcement is past the
    # family's 7-day window: announced again; the third within 30 days escalates.
    assert actions == ["raised", "re_raised", "re_raised", "escalated"]


async def test_a_visit_correction_counts_on_the_open_alert_instead_of_opening_another(
    system: System, producer: AIOKafkaProducer
) -> None:
    loan_id = await known_loan(system, producer)
    task_id = str(uuid.uuid4())
    findings = {"encumbrance_detected": True, "income_change": "decreased"}
    original = visit_event(loan_id, findings=findings) | {"task_id": task_id}
    correction = visit_event(loan_id, findings=findings) | {"task_id": task_id}
    await produce(producer, original)
    await produce(producer, correction)
    await applied(system, original, correction)

    [alert] = await alerts_of(system, loan_id)
    assert (alert["rule"], alert["occurrences"]) == ("collateral_encumbered", 2)
    assert alert["recommended_action"] == "repossession_review"
    assert len(await announced(system, alert["alert_id"])) == 1


async def test_the_worker_loaded_the_rule_set_it_raises_by(system: System) -> None:
    ruleset = rules.current()
    digest = await fetchval(
        system.database_url,
        "SELECT digest FROM alerts.rule_sets WHERE version = $1",
        ruleset.version,
    )
    assert digest == ruleset.digest


# --- replays ------------------------------------------------------------------------------


@pytest.fixture
async def sessions(system: System) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(system.database_url)
    try:
        yield make_session_factory(engine)
    finally:
        await engine.dispose()


async def snapshot(system: System, loan_ids: Sequence[str]) -> tuple[Any, ...]:
    """Everything the events could have changed: the loans' alerts whole, their history,
    their memory, and the outbox."""
    loans = list(loan_ids)
    alerts = await fetchval(
        system.database_url,
        "SELECT coalesce(json_agg(a ORDER BY alert_id), '[]') FROM alerts.alerts a "
        "WHERE loan_id = ANY($1::text[])",
        loans,
    )
    counts = []
    for sql in (
        "SELECT count(*) FROM alerts.alert_history h JOIN alerts.alerts a USING (alert_id) "
        "WHERE a.loan_id = ANY($1::text[])",
        "SELECT count(*) FROM alerts.outbox WHERE message_key = ANY($1::text[])",
        "SELECT count(*) FROM alerts.repayment_memory WHERE loan_id = ANY($1::text[])",
        "SELECT count(*) FROM alerts.visit_memory WHERE loan_id = ANY($1::text[])",
    ):
        counts.append(await fetchval(system.database_url, sql, loans))
    return (json.loads(alerts), *counts)


def a_story(rng: random.Random, loan_id: str, events: int) -> list[dict[str, Any]]:
    """A loan's postings and visits over the last `events` days, in time order."""
    story: list[dict[str, Any]] = []
    dpd = 0
    for day in range(events):
        at = _days_ago(events - day)
        if rng.random() < 0.7:
            status = rng.choice(["missed", "missed", "partial", "paid", "paid", "reversed"])
            dpd = 0 if status == "paid" and rng.random() < 0.5 else dpd + rng.randint(0, 20)
            story.append(
                repayment_event(
                    loan_id,
                    status=status,
                    days_past_due=dpd,
                    installment_no=day + 1,
                    occurred_at=at,
                )
            )
        else:
            outcome = rng.choice(["completed", "borrower_unreachable", "refused"])
            findings = {
                "repayment_difficulty": rng.random() < 0.3,
                "income_change": rng.choice(["same", "decreased"]),
                "vehicle_condition": rng.choice(["good", "good", "damaged"]),
            }
            story.append(visit_event(loan_id, outcome=outcome, findings=findings, occurred_at=at))
    return story


async def apply_directly(
    sessions: async_sessionmaker[AsyncSession], events: Sequence[dict[str, Any]], batch: int
) -> None:
    """The handlers called as the consumer calls them, past the inbox: a batch a topic."""
    postings = [
        RepaymentPosted.model_validate(e) for e in events if e["event_type"] == "repayment-posted"
    ]
    visits = [
        VisitCompleted.model_validate(e) for e in events if e["event_type"] != "repayment-posted"
    ]
    for i in range(0, len(postings), batch):
        async with unit_of_work(sessions) as session:
            await service.on_repayments(session, postings[i : i + batch])
    for i in range(0, len(visits), batch):
        async with unit_of_work(sessions) as session:
            await service.on_visits(session, visits[i : i + batch])


async def test_a_replay_of_the_same_10000_events_changes_nothing(
    system: System, sessions: async_sessionmaker[AsyncSession]
) -> None:
    rng = random.Random(9)
    loans = {new_id("REPLAY"): rng.choice(["private", "commercial"]) for _ in range(400)}
    facts = [
        LoanRegistered.model_validate(loan_registered_event(loan_id, agreed_usage=usage))
        for loan_id, usage in loans.items()
    ]
    async with unit_of_work(sessions) as session:
        await service.on_loans_registered(session, facts)
    events = [event for loan_id in loans for event in a_story(rng, loan_id, 25)]
    assert len(events) == 10_000

    started = time.perf_counter()
    await apply_directly(sessions, events, batch=500)
    first_pass = time.perf_counter() - started
    expected, announcements = expected_desk(events, loans)
    assert await desk_of(system.database_url, list(loans)) == expected
    before = await snapshot(system, list(loans))
    assert before[2] == announcements  # every announcement staged, and only those
    assert sum(a["occurrences"] > 1 for a in before[0]) > 100  # memory was exercised

    started = time.perf_counter()
    await apply_directly(sessions, events, batch=500)  # the same events, past the inbox
    await apply_directly(sessions, events[::-1][:3000], batch=250)  # and some again, shuffled
    replay = time.perf_counter() - started
    assert await snapshot(system, list(loans)) == before
    print(f"10,000 events: first pass {first_pass:.1f}s, replays {replay:.1f}s")


async def test_changed_rules_under_a_loaded_version_are_refused(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ruleset = rules.current()
    assert await rules_admin.load_into(sessions, ruleset) is False  # the worker loaded it
    changed = rules.RULES_FILE.read_text().replace("suppress_days: 7", "suppress_days: 9", 1)
    with pytest.raises(rules.RuleSetError, match="bump `version`"):
        await rules_admin.load_into(sessions, rules.parse_rule_set(changed))
    bumped = changed.replace(f"version: {ruleset.version}", f"version: {ruleset.version + 1000}")
    assert await rules_admin.load_into(sessions, rules.parse_rule_set(bumped)) is True
