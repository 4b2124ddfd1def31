"""Helpers of the alerts tests: loan facts as the scheduler announces them, the park, and
the parking sweep run on demand."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from services.alerts import rules
from services.alerts.parking import ParkingSweep
from services.alerts.rules import PostingMemo, VisitMemo
from services.alerts.triage import Triage
from shared.db import make_engine, make_session_factory
from shared.dead_letter_sender import DeadLetterSender
from shared.events import RepaymentPosted, VisitCompleted
from shared.vocabulary import AgreedUsage
from tests.support import fetchval


def loan_registered_event(
    loan_id: str,
    *,
    agreed_usage: str = "private",
    region: str = "R-test",
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """A `loan-registered` event as the scheduler publishes it, made by the test itself: the
    alerts service must not care who produced it (the scheduler may well be down)."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "loan-registered",
        "schema_version": 1,
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        "loan_id": loan_id,
        "region": region,
        "credit_grade": "C",
        "agreed_usage": agreed_usage,
        "principal": "80000.00",
        "term_months": 36,
        "disbursed_on": "2026-10-15",
        "valuation": "98000.00",
        "ltv": "0.8163",
    }


async def parked_count(database_url: str, event_id: str) -> int:
    sql = "SELECT count(*) FROM alerts.parked_events WHERE event_id = $1::uuid"
    return int(await fetchval(database_url, sql, event_id))


async def claimed(database_url: str, event_id: str) -> bool:
    sql = "SELECT count(*) FROM alerts.inbox WHERE event_id = $1::uuid"
    return bool(await fetchval(database_url, sql, event_id))


@asynccontextmanager
async def parking_sweep(
    database_url: str, producer: AIOKafkaProducer, *, grace: timedelta
) -> AsyncIterator[ParkingSweep]:
    """The alerts worker's sweep with its own grace, dead-lettering as the `alerts` group."""
    engine = make_engine(database_url)
    try:
        dead_letters = DeadLetterSender(producer, "alerts", lambda attempt: 0.2)
        yield ParkingSweep(
            make_session_factory(engine), dead_letters, grace=grace, every_seconds=1.0
        )
    finally:
        await engine.dispose()


def expected_desk(
    events: Sequence[Mapping[str, Any]], agreed_usage: Mapping[str, str]
) -> tuple[Counter[tuple[str, str, str, str, int]], int]:
    """What the desk should hold after `events` (each topic in the given order): the
    alerts as (loan, family, rule, status, occurrences) and how many `alert-raised` were
    announced, worked out with the pure rules and triage, no database."""
    ruleset = rules.current()
    triage = Triage([], ruleset, datetime.now(UTC))
    postings: dict[str, list[PostingMemo]] = defaultdict(list)
    visits: dict[str, list[VisitMemo]] = defaultdict(list)
    repayments = [e for e in events if e["event_type"] == "repayment-posted"]
    seen = [e for e in events if e["event_type"] == "visit-completed"]
    for raw in repayments:
        posting = RepaymentPosted.model_validate(raw)
        story = postings[posting.loan_id]
        for finding in rules.repayment_findings(posting, story, ruleset):
            triage.found(posting.loan_id, posting.event_id, posting.occurred_at, finding)
        if rules.cures(posting):
            triage.cure(posting.loan_id, posting.event_id, "cured")
        story.append(
            PostingMemo(
                posting.event_id,
                posting.installment_no,
                posting.status,
                posting.days_past_due,
                str(posting.amount_due),
                str(posting.amount_paid),
            )
        )
    for raw in seen:
        visit = VisitCompleted.model_validate(raw)
        usage = AgreedUsage(agreed_usage[visit.loan_id])
        for finding in rules.visit_findings(visit, usage, visits[visit.loan_id], ruleset):
            triage.found(visit.loan_id, visit.event_id, visit.occurred_at, finding)
        visits[visit.loan_id].append(
            VisitMemo(visit.event_id, rules.occasion(visit), visit.outcome, visit.ended_at)
        )
    desk = Counter(
        (a.loan_id, a.family, a.rule, str(a.status), a.occurrences) for a in triage.inserted
    )
    return desk, len(triage.announced)


async def desk_of(database_url: str, loan_ids: Sequence[str]) -> Counter[tuple[Any, ...]]:
    """The alerts of these loans as (loan, family, rule, status, occurrences)."""
    rows = await fetchval(
        database_url,
        "SELECT coalesce(array_agg(ARRAY[loan_id, family, rule, status, occurrences::text]), "
        "'{}') FROM alerts.alerts WHERE loan_id = ANY($1::text[])",
        list(loan_ids),
    )
    return Counter((r[0], r[1], r[2], r[3], int(r[4])) for r in rows)
