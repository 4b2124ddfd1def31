"""A worker that dies is brought back by the supervisor behind `make run` (as a process
manager would), it says so, and the replacement does the work.

The visits worker is the one killed here: what this test needs of it is its outbox relay,
which works again within seconds of the restart (its loan-registered consumer first waits
out the dead member's session in the `visits` group, ~20 s on the embedded broker, as every
killed consumer does); `make faults` (worker-kills) kills the scheduler and alerts workers
six times each.
"""

from __future__ import annotations

import os
import signal
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.e2e.conftest import Running
from tests.support import (
    PHONE_FINDINGS,
    auth,
    dispatched,
    eventually,
    new_id,
    read_topic,
    register_agent,
    register_loan,
)


async def test_a_killed_worker_is_restarted_and_does_its_work(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = running.stack
    killed = stack.pid("visits-worker")
    assert killed is not None, "visits-worker is not running"
    os.kill(killed, signal.SIGKILL)

    async def replacement() -> int | None:
        pid = stack.pid("visits-worker")
        return pid if pid not in (None, killed) else None

    restarted = await eventually(replacement, within=30)
    assert stack.restarts("visits-worker") == 1
    said = capsys.readouterr().err
    assert (
        f"visits-worker (pid {killed}) exited with exit code -9 (SIGKILL) after " in said
        and "; next attempt in 1.0 s" in said
    ), said
    assert f"visits-worker restarted (restart 1, pid {restarted})" in said

    # The replacement relays: a visit recorded now reaches visit-completed.
    async with (
        httpx.AsyncClient(base_url=running.urls["scheduler"], timeout=10) as scheduler,
        httpx.AsyncClient(base_url=running.urls["visits"], timeout=10) as visits,
    ):
        region = new_id("SUP")
        agent_id = await register_agent(scheduler, region)
        agent = auth("agent", agent_id)
        loan_id = await register_loan(scheduler, region)
        await dispatched(scheduler, loan_id)
        [task] = (await scheduler.get("/v1/tasks", headers=agent)).json()["items"]
        now = datetime.now(UTC)
        recorded = await visits.post(
            "/v1/visits",
            json={
                "task_id": task["task_id"],
                "loan_id": loan_id,
                "method": task["method"],
                "outcome": "completed",
                "started_at": (now - timedelta(minutes=10)).isoformat(),
                "ended_at": now.isoformat(),
                # The first task is a call, which cannot see the car.
                "findings": PHONE_FINDINGS,
            },
            headers=agent | {"Idempotency-Key": str(uuid.uuid4())},
        )
        assert recorded.status_code == 201, recorded.text
    visit_id = recorded.json()["visit_id"]
    await read_topic(running.bootstrap, "visit-completed", lambda r: r["visit_id"] == visit_id)
