"""`POST /v1/valuations`: vehicle prices in bulk, LTV recomputed, collateral reviews and
tiers, `loan-registered` published; on the real database and broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from shared.events import LOAN_REGISTERED
from tests.integration.conftest import System
from tests.support import CORE_BANKING, auth, fetchrow, new_id, read_topic, register_loan

NDJSON = {"content-type": "application/x-ndjson"}


def lines(*rows: dict[str, str]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


async def test_a_valuation_past_the_ltv_limit_plans_a_review_raises_the_tier_and_is_announced(
    system: System,
) -> None:
    region, today = new_id("R"), datetime.now(UTC).date()
    # A, 80,000 on a car worth 98,000 (LTV 0.82), disbursed 2026-10-15: medium.
    steady = await register_loan(system.scheduler, region, grade="A")
    falling = await register_loan(system.scheduler, region, grade="A")
    body = lines(
        {"loan_id": falling, "valuation": "70000.00", "valued_on": today.isoformat()},  # 1.1429
        {"loan_id": steady, "valuation": "99000.00", "valued_on": today.isoformat()},
        {"loan_id": new_id("L"), "valuation": "1.00", "valued_on": today.isoformat()},
        {"loan_id": steady, "valuation": "-5", "valued_on": today.isoformat()},
        {"loan_id": steady, "valuation": "50000.00", "valued_on": "2020-01-01"},  # older
    )
    response = await system.scheduler.post(
        "/v1/valuations", content=body, headers=CORE_BANKING | NDJSON
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["accepted"], result["updated"], result["reviews"]) == (2, 2, 1)
    assert [(r["line"], r["field"]) for r in result["rejected_lines"]] == [
        (3, "loan_id"),
        (4, "valuation"),
    ]

    row = await fetchrow(
        system.database_url,
        "SELECT valuation, risk_tier, tier_shift FROM scheduler.loans WHERE loan_id = $1",
        falling,
    )
    # LTV 1.14: two LTV points (medium -> high by the facts), and one tier up for crossing.
    assert (str(row["valuation"]), row["risk_tier"], row["tier_shift"]) == ("70000.00", "high", 1)
    review = await fetchrow(
        system.database_url,
        "SELECT method, due_on, reason FROM scheduler.visit_tasks"
        " WHERE loan_id = $1 AND status = 'open' AND method = 'field'",
        falling,
    )
    assert review["method"] == "field"
    assert json.loads(review["reason"])["rule"] == "collateral_review"
    unchanged = await fetchrow(
        system.database_url, "SELECT valuation FROM scheduler.loans WHERE loan_id = $1", steady
    )
    # The newer of the two lines of `steady` won: the 2020 valuation is older than stored.
    assert str(unchanged["valuation"]) == "99000.00"

    announced = await read_topic(
        system.bootstrap,
        LOAN_REGISTERED,
        lambda e: e["loan_id"] == falling and e["valuation"] == "70000.00",
    )
    assert announced["ltv"] == "1.1429"

    forbidden = await system.scheduler.post(
        "/v1/valuations", content=body, headers=auth("agent") | NDJSON
    )
    assert forbidden.status_code == 403
    nothing = await system.scheduler.post(
        "/v1/valuations", content=b"not json\n", headers=CORE_BANKING | NDJSON
    )
    assert nothing.status_code == 422 and nothing.json()["errors"][0]["field"] == "line[1]"
