"""The visits schema holds the shared vocabulary: its CHECK constraints allow exactly the
words of the enums the models use, and PostgreSQL refuses any other word, whoever writes."""

from __future__ import annotations

import json
import re
import uuid
from enum import StrEnum

import asyncpg
import pytest

from services.visits.models import REPORT_CHECKS, REVIEW_CHECKS, VISIT_CHECKS
from services.visits.schemas import ReportKind, ReviewDecision, ReviewState
from shared.vocabulary import (
    EmploymentStatus,
    IncomeChange,
    VehicleCondition,
    VehicleUsage,
    VisitMethod,
    VisitOutcome,
)
from tests.integration.conftest import System
from tests.support import fetchval

# Each constraint of the migrated schema and the vocabulary it must allow, word for word.
EXPECTED: dict[str, type[StrEnum]] = {
    "ck_visits_method": VisitMethod,
    "ck_visits_outcome": VisitOutcome,
    "ck_visits_findings_employment_status": EmploymentStatus,
    "ck_visits_findings_income_change": IncomeChange,
    "ck_visits_findings_vehicle_usage": VehicleUsage,
    "ck_visits_findings_vehicle_condition": VehicleCondition,
    "ck_third_party_reports_kind": ReportKind,
    "ck_visits_review_state": ReviewState,
    "ck_visit_reviews_decision": ReviewDecision,
}

INSERT_VISIT = """
insert into visits.visits (visit_id, agent_id, idempotency_key, request_hash, loan_id,
    method, outcome, started_at, ended_at, findings, created_at)
values ($1, 'AG-x', $2, 'h', 'L-x', $3, $4, now(), now(), $5::jsonb, now())
returning visit_id
"""


def test_the_models_declare_a_check_for_every_vocabulary_column() -> None:
    declared = (
        {f"ck_visits_{name}" for name in VISIT_CHECKS}
        | {f"ck_third_party_reports_{name}" for name in REPORT_CHECKS}
        | {f"ck_visit_reviews_{name}" for name in REVIEW_CHECKS}
    )
    assert declared == set(EXPECTED)


async def test_the_migrated_checks_allow_exactly_the_vocabulary(system: System) -> None:
    for name, words in EXPECTED.items():
        definition = await fetchval(
            system.database_url,
            "select pg_get_constraintdef(c.oid) from pg_constraint c"
            " join pg_namespace n on n.oid = c.connamespace"
            " where n.nspname = 'visits' and c.contype = 'c' and c.conname = $1",
            name,
        )
        assert definition is not None, f"{name} is missing: a visits migration must add it"
        # PostgreSQL shows `x IN (...)` as `x = ANY (ARRAY['a'::text, ...])`.
        [array] = re.findall(r"ARRAY\[(.*?)\]", definition)
        allowed = set(re.findall(r"'([a-z_]+)'::", array))
        assert allowed == {w.value for w in words}, (
            f"{name} allows {sorted(allowed)}; the vocabulary is {[w.value for w in words]}: "
            "a changed vocabulary needs a visits migration that changes the constraint"
        )


@pytest.mark.parametrize(
    ("method", "outcome", "findings"),
    [
        ("telepathy", "completed", {}),
        ("phone", "vanished", {}),
        ("field", "completed", {"vehicle_usage": "stolen"}),
        ("field", "completed", {"employment_status": "astronaut"}),
    ],
)
async def test_a_word_outside_the_vocabulary_is_refused_by_postgresql(
    system: System, method: str, outcome: str, findings: dict[str, str]
) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await fetchval(
            system.database_url,
            INSERT_VISIT,
            uuid.uuid4(),
            uuid.uuid4().hex,
            method,
            outcome,
            json.dumps(findings),
        )


async def test_words_of_the_vocabulary_are_accepted(system: System) -> None:
    visit_id = uuid.uuid4()
    findings = {"vehicle_usage": "ride_hailing", "employment_status": "unemployed"}
    conn = await asyncpg.connect(system.database_url.replace("+asyncpg", ""))
    # Rolled back: an unchained visit left behind would break every later chain check.
    transaction = conn.transaction()
    await transaction.start()
    try:
        inserted = await conn.fetchval(
            INSERT_VISIT,
            visit_id,
            uuid.uuid4().hex,
            "field",
            "borrower_unreachable",
            json.dumps(findings),
        )
        assert inserted == visit_id
    finally:
        await transaction.rollback()
        await conn.close()
