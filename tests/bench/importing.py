"""The loan import at portfolio size: one NDJSON body, streamed, through the real API."""

from __future__ import annotations

from tests.bench import workload
from tests.bench.report import Row
from tests.bench.stack import Bench

API = "scheduler-api"


async def measure(bench: Bench) -> None:
    n = bench.sizes.import_loans
    api = bench.procs[API]
    before = api.memory()
    outcome = await workload.import_loans(bench.scheduler, workload.loan_ids("IMP", n))
    after = api.memory()
    if outcome.chunked:
        bench.report.note(
            f"the scheduler refused {n} lines in one body (413): sent "
            f"{workload.FALLBACK_CHUNK}-line chunks instead"
        )
    bench.report.note(f"import answered: {outcome.summary()}")
    bench.report.add(Row(f"import {n} loans", outcome.seconds, "s", 30.0 * n / 100_000, True))
    bench.report.add(Row("import rate", n / outcome.seconds, "loans/s"))
    if before is not None and after is not None:
        bench.report.add(Row("scheduler-api peak RSS before", before.peak_mib, "MiB"))
        bench.report.add(Row("scheduler-api peak RSS after", after.peak_mib, "MiB"))
