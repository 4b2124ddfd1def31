"""`POST /v1/loans/import`, streamed: good lines are registered and bad lines are reported by
number, re-importing a file changes nothing, and a portfolio is not capped at 10,000 lines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx

from services.scheduler.loan_import import MAX_LINE_BYTES
from tests.integration.conftest import System
from tests.support import ADMIN, CORE_BANKING, fetchrow, fetchval, loan_body, new_id


def line(loan_id: str, home: str, **overrides: Any) -> bytes:
    """An import line of a loan of region `home`, with `overrides` of its fields."""
    return json.dumps({"loan_id": loan_id, **loan_body(region=home), **overrides}).encode()


async def streamed(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def post_import(system: System, body: bytes | AsyncIterator[bytes]) -> httpx.Response:
    return await system.scheduler.post(
        "/v1/loans/import",
        content=body,
        headers={**CORE_BANKING, "content-type": "application/x-ndjson"},
        timeout=300,
    )


async def region_state(system: System, region: str) -> tuple[int, int, Any, int]:
    """Loans, open tasks, the latest `updated_at` and outbox rows of a region's loans."""
    row = await fetchrow(
        system.database_url,
        "SELECT count(*) AS loans, max(updated_at) AS updated_at,"
        " (SELECT count(*) FROM scheduler.visit_tasks t JOIN scheduler.loans l USING (loan_id)"
        "  WHERE l.region = $1) AS tasks,"
        " (SELECT count(*) FROM scheduler.outbox o JOIN scheduler.loans l"
        "  ON l.loan_id = o.message_key WHERE l.region = $1) AS announced"
        " FROM scheduler.loans WHERE region = $1",
        region,
    )
    return row["loans"], row["tasks"], row["updated_at"], row["announced"]


async def test_good_lines_are_written_and_bad_lines_reported_by_number(system: System) -> None:
    region = new_id("R")
    good = [new_id("L") for _ in range(3)]
    bad = new_id("L")
    body = b"\n".join(
        [
            line(good[0], region),
            line(bad, region, term_months=0),  # 2: invalid field
            b"",  # 3: blank, skipped but counted
            b'{"loan_id": "L-x", ',  # 4: not JSON
            line(good[1], region),
            line(new_id("L"), region, occupation="\xe4").replace(b"\\u00e4", b"\xe4"),  # 6: latin-1
            line(good[2], region) + b"\r",  # CRLF line ending
            b"[1, 2]",  # 8: JSON, not a loan
        ]
    )
    response = await post_import(system, body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert {k: result[k] for k in ("accepted", "created", "updated", "unchanged", "rejected")} == {
        "accepted": 3,
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "rejected": 4,
    }
    rejected = {r["line"]: r for r in result["rejected_lines"]}
    assert sorted(rejected) == [2, 4, 6, 8]
    assert rejected[2]["field"] == "term_months"
    assert "greater than or equal to 1" in rejected[2]["reason"]
    assert "JSON" in rejected[4]["reason"]
    assert rejected[6]["reason"].startswith("not UTF-8")
    assert rejected[8]["reason"]
    assert "110101199003074512" not in response.text  # reasons never echo the input

    for loan_id in good:
        assert (await system.scheduler.get(f"/v1/loans/{loan_id}", headers=ADMIN)).is_success
        [task] = (await system.scheduler.get(f"/v1/loans/{loan_id}/tasks", headers=ADMIN)).json()[
            "items"
        ]
        assert (task["method"], task["due_on"], task["agent_id"]) == ("phone", "2026-11-15", None)
    assert (await system.scheduler.get(f"/v1/loans/{bad}", headers=ADMIN)).status_code == 404
    assert await region_state(system, region) == (3, 3, await _updated_at(system, region), 3)
    next_due = await fetchval(
        system.database_url,
        "SELECT array_agg(DISTINCT next_due_on::text) FROM scheduler.loans WHERE region = $1",
        region,
    )
    assert next_due == ["2026-11-15"]


async def _updated_at(system: System, region: str) -> Any:
    sql = "SELECT max(updated_at) FROM scheduler.loans WHERE region = $1"
    return await fetchval(system.database_url, sql, region)


async def test_reimporting_a_file_or_putting_one_of_its_loans_changes_nothing(
    system: System,
) -> None:
    region = new_id("R")
    ids = [new_id("L") for _ in range(50)]
    body = b"\n".join(line(loan_id, region) for loan_id in ids) + b"\n"
    first = await post_import(system, body)
    assert (first.json()["created"], first.json()["accepted"]) == (50, 50)
    before = await region_state(system, region)
    assert before[0] == before[1] == before[3] == 50

    again = await post_import(system, body)
    assert again.status_code == 200, again.text
    assert {k: again.json()[k] for k in ("accepted", "created", "updated", "unchanged")} == {
        "accepted": 50,
        "created": 0,
        "updated": 0,
        "unchanged": 50,
    }
    assert await region_state(system, region) == before  # no row, task or event more

    # The same PUT as the file's line is no change either (one digest for both routes).
    same = json.loads(line(ids[0], region))
    same.pop("loan_id")
    stored_borrower = await fetchval(
        system.database_url, "SELECT borrower_id FROM scheduler.loans WHERE loan_id = $1", ids[0]
    )
    # loan_body draws a new borrower id each time: take the stored one back.
    same["borrower"]["borrower_id"] = stored_borrower
    put = await system.scheduler.put(f"/v1/loans/{ids[0]}", json=same, headers=CORE_BANKING)
    assert put.status_code == 200
    assert await region_state(system, region) == before


async def test_a_changed_line_is_updated_and_announced_once(system: System) -> None:
    region = new_id("R")
    loan_id = new_id("L")
    original = line(loan_id, region)
    assert (await post_import(system, original)).json()["created"] == 1
    regraded = json.loads(original) | {"credit_grade": "E"}
    response = await post_import(system, json.dumps(regraded).encode())
    assert {k: response.json()[k] for k in ("created", "updated", "unchanged")} == {
        "created": 0,
        "updated": 1,
        "unchanged": 0,
    }
    loans, tasks, _, announced = await region_state(system, region)
    assert (loans, tasks, announced) == (1, 1, 2)  # the plan kept, the change announced
    grade = await fetchval(
        system.database_url, "SELECT credit_grade FROM scheduler.loans WHERE loan_id = $1", loan_id
    )
    assert grade == "E"


async def test_a_later_line_of_the_same_loan_is_rejected_naming_the_earlier_one(
    system: System,
) -> None:
    region = new_id("R")
    loan_id = new_id("L")
    body = b"\n".join(
        [
            line(loan_id, region, credit_grade="A"),
            line(new_id("L"), region),
            line(loan_id, region, credit_grade="E"),
        ]
    )
    result = (await post_import(system, body)).json()
    assert (result["created"], result["rejected"]) == (2, 1)
    [duplicate] = result["rejected_lines"]
    assert (duplicate["line"], duplicate["field"]) == (3, "loan_id")
    assert "line 1" in duplicate["reason"]
    grade = await fetchval(
        system.database_url, "SELECT credit_grade FROM scheduler.loans WHERE loan_id = $1", loan_id
    )
    assert grade == "A"  # the first line's registration


async def test_an_overlong_line_is_rejected_without_being_held(system: System) -> None:
    region = new_id("R")
    before, after = new_id("L"), new_id("L")
    overlong = b'{"loan_id": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}'
    # Streamed in pieces smaller than a line, so lines span chunks.
    body = b"\n".join([line(before, region), overlong, line(after, region)]) + b"\n"
    parts = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    response = await post_import(system, streamed(parts))
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["created"], result["rejected"]) == (2, 1)
    assert result["rejected_lines"] == [
        {"line": 2, "field": None, "reason": f"longer than {MAX_LINE_BYTES} bytes"}
    ]


async def test_an_import_without_a_good_line_is_refused_naming_the_lines(system: System) -> None:
    region = new_id("R")
    body = b"\n".join([line(new_id("L"), region, principal="0.00"), b"", b"not json"])
    response = await post_import(system, body)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    fields = [error["field"] for error in response.json()["errors"]]
    assert fields == ["line[1].principal", "line[3]"]

    empty = await post_import(system, b"\n\n")
    assert empty.status_code == 422
    assert empty.json()["errors"] == [{"field": "body", "message": "no loans in the import"}]


async def test_a_portfolio_past_ten_thousand_lines_goes_through_in_one_body(
    system: System,
) -> None:
    region = new_id("R")
    template = line("LOANID", region)
    count = 25_000
    prefix = new_id("P")

    def lines() -> Iterable[bytes]:
        # Streamed as it is made: 500 lines a chunk.
        batch: list[bytes] = []
        for n in range(count):
            batch.append(template.replace(b"LOANID", f"{prefix}-{n}".encode()))
            if len(batch) == 500:
                yield b"\n".join(batch) + b"\n"
                batch = []

    response = await post_import(system, streamed(lines()))
    assert response.status_code == 200, response.text
    assert (response.json()["created"], response.json()["rejected"]) == (count, 0)
    loans, tasks, _, announced = await region_state(system, region)
    assert loans == tasks == announced == count
