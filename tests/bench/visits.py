"""Visit capture: `POST /v1/visits` on one visits API process under wrk, beside a bare
FastAPI + asyncpg insert endpoint (tests/bench/bare_app.py) driven the same way in the same
run. The ratio of the two rates is the figure (issue 7: >= 0.5, p99 < 50 ms at 16
connections).

The agents capture phone visits on loans they hold tasks for, each request a new visit
(fresh Idempotency-Key and client visit id). The agents' capture rate limit is lifted for
the bench (`CAPTURE_LIMIT` below, through VISIT_CAPTURES_PER_MINUTE): a dozen agents at a
few hundred captures a second each is the load of thousands of agents.
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from shared import devstack
from shared.auth import issue_token
from shared.settings import DEV_JWT_SECRET
from tests.bench import wrk
from tests.bench.processes import CLOCK_TICKS, Proc, cpu_seconds_of
from tests.bench.report import Row
from tests.bench.stack import Bench
from tests.support import PHONE_FINDINGS, auth

FIND_TASKS_WITHIN = 60.0
WARM_UP_SECONDS = 5.0
# Loans per agent the captures go round: a field agent's day, visited again and again. The
# warm-up captures on each, so the measured run is the steady state (the scheduler's yes
# per agent and loan remembered, services/visits/grants.py; loans' regions cached).
LOANS_PER_AGENT = 8
# Captures a minute per agent for the bench's visits API: far above any agent's pace.
CAPTURE_LIMIT = 10_000_000
RATIO_TARGET = 0.5
P99_TARGET_MS = 50.0
BARE = "bare-insert"
ROUNDS = 2
LABELS = {"bare": "bare insert endpoint", "visits": "POST /v1/visits"}


async def measure(bench: Bench) -> None:
    pairs = await _agent_loans(bench)
    if not pairs:
        bench.report.note("visit capture skipped: no agent was given a task")
        return
    wrk.require_wrk()
    work = bench.procs.log_dir.parent
    captures = [(issue_token(DEV_JWT_SECRET, agent, "agent"), loan) for agent, loan in pairs]
    load = wrk.Load(
        connections=bench.sizes.capture_connections, seconds=bench.sizes.capture_seconds
    )
    lua = wrk.script(work / "visits.lua", captures, PHONE_FINDINGS, load.threads)
    bare_url = _start_bare(bench)
    urls = {"bare": bare_url, "visits": bench.urls["visits"]}
    for url in urls.values():
        await _probe(url, pairs[0])
    bench.report.note(
        f"wrk -t{load.threads} -c{load.connections} -d{load.seconds:g}s, {ROUNDS} runs of each "
        f"alternating, after {WARM_UP_SECONDS:g}s of warm-up each; {len(pairs)} (agent, loan) "
        "pairs round-robin; "
        f"VISIT_CAPTURES_PER_MINUTE={CAPTURE_LIMIT} for the bench's agents; "
        "one uvicorn process each, same PostgreSQL"
    )
    runs: dict[str, list[wrk.Figures]] = {name: [] for name in urls}
    for url in urls.values():
        await wrk.run(url, lua, wrk.Load(load.connections, load.threads, WARM_UP_SECONDS))
    recorded = 0
    # Alternating, so that a change in what else the shared machine runs weighs on both.
    for _ in range(ROUNDS):
        for name, url in urls.items():
            before = await _visits_recorded(bench)
            proc = bench.procs[BARE if name == "bare" else "visits-api"]
            cpu = _Cpu.now(proc, work / "pg")
            f = await wrk.run(url, lua, load)
            used = _Cpu.now(proc, work / "pg") - cpu
            runs[name].append(f)
            bench.report.note(
                f"{LABELS[name]}: {f.rate:.0f} req/s, p50 {f.p50_ms:.1f} ms, p99 "
                f"{f.p99_ms:.1f} ms, max {f.max_ms:.1f} ms; {f.requests} answered, "
                f"{f.failed} failed; {used.describe(f)}"
            )
            if name == "visits":
                recorded += await _visits_recorded(bench) - before
    for name, figures in runs.items():
        label = LABELS[name]
        bench.report.add(Row(f"{label}: requests/s", _rate(figures), "req/s"))
        bench.report.add(Row(f"{label}: p50 (median of runs)", _median_p50(figures), "ms"))
        target = P99_TARGET_MS if name == "visits" else None
        bench.report.add(Row(f"{label}: p99 (worst run)", _worst_p99(figures), "ms", target, True))
    answered = sum(f.requests - f.failed for f in runs["visits"])
    bench.report.note(
        f"visits recorded during the measured runs: {recorded} (wrk counted {answered} 2xx; "
        "requests in flight when wrk stops may land after)"
    )
    bare, visits = _rate(runs["bare"]), _rate(runs["visits"])
    if bare > 0:
        bench.report.add(
            Row("POST /v1/visits / bare insert (rate)", visits / bare, "x", RATIO_TARGET)
        )
    failed = {name: sum(f.failed for f in figures) for name, figures in runs.items()}
    if any(failed.values()):
        bench.report.note(f"FAILED requests: {failed}")


@dataclass(frozen=True)
class _Cpu:
    """CPU seconds used so far by the server process, PostgreSQL (all its processes) and
    wrk, and by the whole machine: where a run's CPU went on a machine of two cores that
    wrk, PostgreSQL and the server share with whatever else runs on it."""

    server: float
    postgres: float
    load_generator: float
    machine: float

    @classmethod
    def now(cls, server: Proc, pg_data: Path) -> _Cpu:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk: the bench's only
        return cls(
            server.cpu_seconds(),
            _postgres_cpu(pg_data),
            children.ru_utime + children.ru_stime,
            _machine_busy(),
        )

    def __sub__(self, other: _Cpu) -> _Cpu:
        return _Cpu(
            self.server - other.server,
            self.postgres - other.postgres,
            self.load_generator - other.load_generator,
            self.machine - other.machine,
        )

    def describe(self, run: wrk.Figures) -> str:
        per_request = 1000 / run.requests if run.requests else 0.0
        # What the rest of the machine took meanwhile: the kernel's own share of the traffic
        # (loopback TCP in softirq, more at a higher rate), the bench's other processes, and
        # whatever else runs on a shared machine. A run that was crowded out is told apart.
        others = self.machine - self.server - self.postgres - self.load_generator
        return (
            f"CPU ms a request: server {self.server * per_request:.2f}, PostgreSQL "
            f"{self.postgres * per_request:.2f}, wrk {self.load_generator * per_request:.2f}; "
            f"{self.server / run.seconds:.2f} CPU s/s in the server process, machine busy "
            f"{self.machine / run.seconds:.2f} of {_CORES} cores "
            f"({others / run.seconds:.2f} of them anything else)"
        )


_CORES = os.cpu_count()


def _postgres_cpu(data_dir: Path) -> float:
    """User + system CPU of the PostgreSQL whose data directory this is: the postmaster,
    the backends it forked (alive) and those that exited (its children's time)."""
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
        with open(f"/proc/{postmaster}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    except (FileNotFoundError, ValueError, IndexError):
        return 0.0
    # Fields 14 to 17 of stat(5): utime, stime, cutime, cstime (after the name: 11 to 14).
    own = sum(int(value) for value in fields[11:15]) / CLOCK_TICKS
    return own + sum(cpu_seconds_of(int(pid)) for pid in children)


def _machine_busy() -> float:
    """CPU seconds the machine's cores spent busy so far (all processes, anyone's)."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / CLOCK_TICKS


def _rate(figures: list[wrk.Figures]) -> float:
    seconds = sum(f.seconds for f in figures)
    return sum(f.requests for f in figures) / seconds if seconds else 0.0


def _median_p50(figures: list[wrk.Figures]) -> float:
    return statistics.median(f.p50_ms for f in figures)


def _worst_p99(figures: list[wrk.Figures]) -> float:
    return max(f.p99_ms for f in figures)


def _start_bare(bench: Bench) -> str:
    port = devstack.free_port()
    argv = [sys.executable, "-m", "uvicorn", "tests.bench.bare_app:app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    proc = bench.procs.start(BARE, argv)
    devstack.wait_for_port(port, timeout=60, give_up=lambda: not proc.alive())
    return f"http://127.0.0.1:{port}"


async def _probe(url: str, pair: tuple[str, str]) -> None:
    """One capture before wrk: a refusal shows here with its problem+json, which wrk
    would only count."""
    agent_id, loan_id = pair
    now = datetime.now(UTC)
    key = str(uuid.uuid4())
    body = {
        "visit_id": key,
        "loan_id": loan_id,
        "method": "phone",
        "outcome": "completed",
        "started_at": (now - timedelta(minutes=10)).isoformat(),
        "ended_at": (now - timedelta(minutes=5)).isoformat(),
        "findings": PHONE_FINDINGS,
    }
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        headers = auth("agent", agent_id) | {"Idempotency-Key": key}
        response = await client.post("/v1/visits", json=body, headers=headers)
    if response.status_code != 201:
        raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:500]}")


async def _visits_recorded(bench: Bench) -> int:
    count: int = await bench.db.fetchval("SELECT count(*) FROM visits.visits")
    return count


async def _agent_loans(bench: Bench) -> list[tuple[str, str]]:
    """(agent, loan) pairs from each agent's own task list (dispatch may take a moment)."""
    deadline = time.monotonic() + FIND_TASKS_WITHIN
    while True:
        pairs = []
        for agent_id in bench.agents:
            response = await bench.scheduler.get("/v1/tasks", headers=auth("agent", agent_id))
            response.raise_for_status()
            loans = dict.fromkeys(str(task["loan_id"]) for task in response.json()["items"])
            pairs += [(agent_id, loan_id) for loan_id in list(loans)[:LOANS_PER_AGENT]]
        if pairs or time.monotonic() > deadline:
            return pairs
        await asyncio.sleep(1.0)
