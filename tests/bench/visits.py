"""Visit capture through the real visits API, by agents on loans they hold tasks for."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from tests.bench.report import Row
from tests.bench.stack import Bench
from tests.support import PHONE_FINDINGS, auth

FIND_TASKS_WITHIN = 60.0


async def measure(bench: Bench) -> None:
    pairs = await _agent_loans(bench)
    if not pairs:
        bench.report.note("visit capture skipped: no agent was given a task")
        return
    latencies = []
    async with httpx.AsyncClient(base_url=bench.urls["visits"], timeout=30) as visits:
        for i in range(bench.sizes.visits):
            agent_id, loan_id = pairs[i % len(pairs)]
            now = datetime.now(UTC)
            body = {
                "task_id": None,
                "loan_id": loan_id,
                "method": "phone",
                "outcome": "completed",
                "started_at": now.isoformat(),
                "ended_at": (now + timedelta(minutes=5)).isoformat(),
                "findings": PHONE_FINDINGS,
                "notes": None,
            }
            headers = auth("agent", agent_id) | {"Idempotency-Key": str(uuid.uuid4())}
            started = time.perf_counter()
            response = await visits.post("/v1/visits", json=body, headers=headers)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 201:
                raise RuntimeError(
                    f"visit capture answered {response.status_code}: {response.text}"
                )
    p95 = statistics.quantiles(latencies, n=20)[18]
    bench.report.add(Row("visit capture p50", statistics.median(latencies), "ms"))
    bench.report.add(Row("visit capture p95", p95, "ms", 250.0, True))


async def _agent_loans(bench: Bench) -> list[tuple[str, str]]:
    """(agent, loan) pairs from each agent's own task list (dispatch may take a moment)."""
    deadline = time.monotonic() + FIND_TASKS_WITHIN
    while True:
        pairs = []
        for agent_id in bench.agents:
            response = await bench.scheduler.get("/v1/tasks", headers=auth("agent", agent_id))
            response.raise_for_status()
            pairs += [(agent_id, str(task["loan_id"])) for task in response.json()["items"]]
        if pairs or time.monotonic() > deadline:
            return pairs
        await asyncio.sleep(1.0)
