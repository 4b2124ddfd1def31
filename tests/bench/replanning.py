"""The daily re-plan at portfolio size (BENCH_REPLAN loans, default 0: skipped).

The loans are generated in the database with one `INSERT … SELECT generate_series` (a
million through the API would be the import's benchmark, not this one), with a spread of
grades, terms, valuations, disbursement dates and visit history. Then
`python -m services.scheduler.replan` runs as its own process twice: the first run is a
portfolio nobody has planned yet (every loan gets its tier and most their routine tasks),
the second the next day's steady state. Each prints its seconds and its peak RSS.

`python -m tests.bench.replanning` runs this phase alone on an embedded PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from shared import devstack
from tests.bench.report import Report, Row
from tests.bench.stack import Bench

TARGET_SECONDS = 60.0
TARGET_PEAK_MIB = 1024.0

GENERATE = """
INSERT INTO scheduler.loans
    (loan_id, borrower_id, borrower_name_enc, national_id_enc, phone_enc, occupation,
     monthly_income, vin, plate, make_model, valuation, valued_on, credit_grade, principal,
     term_months, disbursed_on, region, agreed_usage, days_past_due, last_visit_on,
     last_field_on, last_third_party_on, created_at, updated_at)
SELECT 'RPL-' || lpad(i::text, 8, '0'), 'B-' || i, 'enc', 'enc', 'enc', 'driver', 12000,
       'LSVAU2180N2183294', 'A' || i, 'BYD Qin', 60000 + (i % 60) * 1000, d.on - 10,
       (ARRAY['A', 'B', 'C', 'D', 'E'])[1 + i % 5], 80000, (ARRAY[12, 24, 36, 48, 60])[1 + i % 5],
       d.on, 'R' || (i % 20), 'private', 0,
       CASE WHEN i % 4 = 0 THEN NULL ELSE current_date - (i % 170) END,
       CASE WHEN i % 3 = 0 THEN NULL ELSE current_date - (i % 360) END,
       CASE WHEN i % 2 = 0 THEN NULL ELSE current_date - (i % 90) END,
       now(), now()
FROM generate_series($1::int, $2::int) AS i
CROSS JOIN LATERAL (SELECT current_date - (i % 1000) AS on) AS d
"""


async def generate(db: asyncpg.Pool, n: int, *, chunk: int = 200_000) -> float:
    """`n` loans in chunks of `chunk` (each one statement); seconds taken."""
    started = time.monotonic()
    for first in range(1, n + 1, chunk):
        await db.execute(GENERATE, first, min(first + chunk - 1, n), timeout=None)
    await db.execute("ANALYZE scheduler.loans")
    return time.monotonic() - started


def run_replan(database_url: str) -> dict[str, Any]:
    """`python -m services.scheduler.replan` as its own process: its JSON line."""
    env = os.environ | {
        "DATABASE_URL": database_url,
        "ENV": "test",
        # A chunk's statements are bounded by the chunk size, not by the request timeout.
        "DB_STATEMENT_TIMEOUT_MS": "600000",
        "PYTHONWARNINGS": "ignore::UserWarning",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.scheduler.replan"],
        env=env,
        cwd=devstack.ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        last = [line for line in done.stderr.splitlines() if "Error" in line][-1:]
        raise RuntimeError(f"re-plan exited {done.returncode}: {last}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def phase(database_url: str, db: asyncpg.Pool, n: int, report: Report) -> None:
    seconds = await generate(db, n)
    report.note(f"{n:,} loans generated in SQL in {seconds:.1f}s")
    for label in ("first re-plan", "next day's re-plan"):
        result = await asyncio.to_thread(run_replan, database_url)
        changes = {
            k: v
            for k, v in result.items()
            if k not in ("seconds", "peak_rss_mib", "policy_version")
        }
        report.note(f"{label}: {changes}")
        report.add(Row(f"{label} of {n:,} loans", result["seconds"], "s", TARGET_SECONDS, True))
        report.add(Row(f"{label} peak RSS", result["peak_rss_mib"], "MiB", TARGET_PEAK_MIB, True))


async def measure(bench: Bench) -> None:
    n = int(os.environ.get("BENCH_REPLAN", "0"))
    if n <= 0:
        bench.report.note("skipped (set BENCH_REPLAN=1000000)")
        return
    await phase(bench.database_url, bench.db, n, bench.report)


def main() -> None:
    n = int(os.environ.get("BENCH_REPLAN", "1000000"))
    root = devstack.ROOT / ".data"
    root.mkdir(exist_ok=True)
    report = Report()
    with (
        tempfile.TemporaryDirectory(prefix="bench-replan-", dir=root) as work,
        devstack.embedded_postgres(Path(work) / "pg") as database_url,
    ):
        devstack.migrate(database_url, "scheduler")

        async def go() -> None:
            db = await asyncpg.create_pool(
                database_url.replace("+asyncpg", ""), min_size=1, max_size=2
            )
            try:
                await phase(database_url, db, n, report)
            finally:
                await db.close()

        asyncio.run(go())
    print(report.table())


if __name__ == "__main__":
    main()
