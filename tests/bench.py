"""`make bench`: throughput and latency of the hot paths on the real embedded stack.

Prints numbers and their ratio to the target (ratio >= 1.0 meets it). Not a test: the
machines are shared and noisy, so no assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from services.alerts import rules
from services.scheduler import policy
from shared import devstack
from shared.events import RepaymentPosted, VisitCompleted, VisitFindings
from shared.vocabulary import AgreedUsage
from tests.support import (
    auth,
    fetchval,
    new_id,
    register_agent,
    register_loan,
    repayment_event,
)
from tests.system import System, in_process_system

TARGETS = {
    "policy_plans_per_s": 50_000.0,
    "rules_evaluations_per_s": 20_000.0,
    "consumer_events_per_s": 100.0,
    "visit_capture_p95_ms": 250.0,
}
LOANS = 100
POSTINGS = 1_000
VISITS = 200
CONSUMERS = ("scheduler", "alerts")


def report(name: str, value: float, unit: str, *, lower_is_better: bool = False) -> None:
    target = TARGETS[name]
    ratio = target / value if lower_is_better else value / target
    verdict = "meets" if ratio >= 1.0 else "MISSES"
    print(
        f"{name:28s} {value:12.1f} {unit:10s} target {target:>10.1f}  ratio {ratio:5.2f}  {verdict}"
    )


def bench_pure() -> None:
    started = time.perf_counter()
    n = 100_000
    for i in range(n):
        policy.next_routine_visit(
            visited_on=date(2026, 6, 1),
            credit_grade="ABCDE"[i % 5],
            days_past_due=i % 120,
            outcome="completed",
        )
    report("policy_plans_per_s", n / (time.perf_counter() - started), "plans/s")

    posting = RepaymentPosted(
        loan_id="L",
        installment_no=1,
        due_date=date(2026, 6, 1),
        amount_due="100.00",
        amount_paid="0.00",
        status="missed",
        days_past_due=95,
        outstanding_principal="1000.00",
    )
    visit = VisitCompleted(
        loan_id="L",
        visit_id=uuid.uuid4(),
        agent_id="A",
        method="field",
        outcome="completed",
        started_at=datetime.now(UTC),
        ended_at=datetime.now(UTC),
        findings=VisitFindings(vehicle_usage="commercial", encumbrance_detected=True),
    )
    started = time.perf_counter()
    for _ in range(n // 2):
        rules.repayment_alerts(posting)
        rules.visit_alerts(visit, AgreedUsage.PRIVATE)
    report("rules_evaluations_per_s", n / (time.perf_counter() - started), "evals/s")


async def wait_for(probe: Callable[[], Awaitable[bool]], within: float = 300.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("benchmark workload did not finish")


async def bench_system(database_url: str, bootstrap: str) -> None:
    async with in_process_system(database_url, bootstrap) as system:
        region = new_id("R")
        agent_id = await register_agent(system.scheduler, region)
        loans = [await register_loan(system.scheduler, region) for _ in range(LOANS)]
        await bench_consumers(system, loans)
        await bench_visit_capture(system, loans, agent_id)


async def send_all(producer: AIOKafkaProducer, events: list[dict[str, Any]]) -> None:
    # send() without waiting per event: the producer batches, as core banking's would.
    for event in events:
        await producer.send(
            str(event["event_type"]), json.dumps(event).encode(), key=str(event["loan_id"]).encode()
        )
    await producer.flush()


async def bench_consumers(system: System, loans: list[str]) -> None:
    """Both consumers (scheduler, alerts) in this one process, as in the integration tier."""
    producer = AIOKafkaProducer(bootstrap_servers=system.bootstrap, enable_idempotence=False)
    await producer.start()
    events = [
        repayment_event(
            loans[i % len(loans)],
            status="missed" if i % 5 == 0 else "paid",
            days_past_due=35 if i % 5 == 0 else 0,
            installment_no=1 + i // len(loans),
        )
        for i in range(POSTINGS)
    ]
    inbox_sql = "SELECT count(*) FROM {}.inbox"
    before = {s: await fetchval(system.database_url, inbox_sql.format(s)) for s in CONSUMERS}
    started, cpu_started = time.perf_counter(), time.process_time()
    await send_all(producer, events)
    for service in CONSUMERS:

        async def done(service: str = service) -> bool:
            applied = await fetchval(system.database_url, inbox_sql.format(service))
            return bool(applied - before[service] >= POSTINGS)

        await wait_for(done)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        print(f"  {service}: {POSTINGS} postings applied after {elapsed:.2f}s (cpu {cpu:.2f}s)")
        report("consumer_events_per_s", POSTINGS / elapsed, "events/s")

    # Redelivery of every posting: nothing may be applied twice.
    alerts_sql = "SELECT count(*) FROM alerts.alerts"
    alerts_before = await fetchval(system.database_url, alerts_sql)
    await send_all(producer, events)
    sentinel = repayment_event(loans[0], status="missed", days_past_due=95, installment_no=99)
    await send_all(producer, [sentinel])

    async def sentinel_applied() -> bool:
        sql = "SELECT count(*) FROM alerts.alerts WHERE source_event_id = $1"
        return bool(await fetchval(system.database_url, sql, uuid.UUID(sentinel["event_id"])))

    await wait_for(sentinel_applied)
    duplicates = await fetchval(system.database_url, alerts_sql) - alerts_before - 1
    print(f"  redelivered {POSTINGS} postings: duplicate alerts applied: {duplicates}")
    await producer.stop()


async def bench_visit_capture(system: System, loans: list[str], agent_id: str) -> None:
    latencies = []
    # The region's only agent: it holds the loans' tasks, so it may record visits on them.
    agent = auth("agent", agent_id)
    for i in range(VISITS):
        body = {
            "task_id": None,
            "loan_id": loans[i % len(loans)],
            "method": "phone",
            "outcome": "completed",
            "started_at": datetime.now(UTC).isoformat(),
            "ended_at": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
            "findings": {"vehicle_usage": "private"},
            "notes": None,
        }
        started = time.perf_counter()
        response = await system.visits.post(
            "/v1/visits", json=body, headers=agent | {"Idempotency-Key": str(uuid.uuid4())}
        )
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 201, response.text
    p95 = statistics.quantiles(latencies, n=20)[18]
    print(f"  {VISITS} visits: median {statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms")
    report("visit_capture_p95_ms", p95, "ms", lower_is_better=True)


def main() -> None:
    # INFO logs would drown the table.
    logging.getLogger().setLevel(logging.WARNING)
    print("pure domain logic (one core):")
    bench_pure()
    root = Path(__file__).resolve().parent.parent / ".data"
    root.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=root))
    try:
        with (
            devstack.embedded_postgres(work / "pg") as database_url,
            devstack.embedded_broker(devstack.free_port()) as bootstrap,
        ):
            for service in devstack.SERVICES:
                devstack.migrate(database_url, service)
            asyncio.run(devstack.create_topics(bootstrap))
            print(f"system on embedded PostgreSQL + Tansu ({LOANS} loans, {POSTINGS} postings):")
            asyncio.run(bench_system(database_url, bootstrap))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
