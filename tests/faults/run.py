"""One scenario from set-up to verdict: a fresh database and broker, the six processes
under the supervisor, loans registered, postings flowing while the scenario's faults
strike, then the drain and the checks."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared import devstack
from shared.supervisor import RestartPolicy
from tests.faults import core_banking, evidence
from tests.faults.core_banking import Posting, Stream
from tests.faults.infra import Broker, Postgres, scenario_database

# Compressed time: a worker killed every few seconds would otherwise wait up to 30 s.
# The production-shaped policy of `make run` is covered by the supervisor's unit tests.
FAULT_RESTART_POLICY = RestartPolicy(first_delay=0.5, max_delay=4.0, healthy_after=15.0)
SCENARIO_WITHIN = 600.0  # the hard bound on one scenario, whatever hangs
DRAIN_WITHIN = 180.0  # after the last posting is acknowledged
STALLED_AFTER = 45.0  # no posting applied for this long: waiting longer would not help
SETTLE_WITHIN = 30.0  # for alert-raised to reach the scheduler once the postings are in
READINESS_EVERY = 1.0


@dataclass(frozen=True)
class Workload:
    loans: int = 2_000
    postings: int = 20_000
    missed_share: float = 0.2


@dataclass
class Run:
    """The live scenario: what the faults act on and what they leave a note in."""

    name: str
    pg: Postgres
    broker: Broker
    stack: devstack.Stack
    database_url: str
    log_dir: Path
    planned: list[Posting]
    stream: Stream
    api_urls: dict[str, str]
    started: float = field(default_factory=time.monotonic)
    timeline: list[str] = field(default_factory=list)
    readiness: list[tuple[float, str, int, str]] = field(default_factory=list)
    # Named checks a scenario adds to the common ones (name -> passed, detail).
    extra_checks: dict[str, tuple[bool, str]] = field(default_factory=dict)
    flowing: asyncio.Task[None] | None = None

    def note(self, text: str) -> None:
        line = f"  {time.monotonic() - self.started:6.1f}s {text}"
        self.timeline.append(line)
        print(line, flush=True)

    async def wait_for_acked(self, share: float, within: float = 300.0) -> None:
        """Until core banking has delivered `share` of the postings."""
        target = int(share * len(self.planned))
        deadline = time.monotonic() + within
        while len(self.stream.acked_at) < target:
            if self.flowing is not None and self.flowing.done():
                self.flowing.result()  # core banking gave up: say why
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target} postings not delivered within {within}s")
            await asyncio.sleep(0.2)

    async def applied(self) -> dict[str, int]:
        ids = [uuid.UUID(p.event_id) for p in self.planned]
        return await evidence.applied_counts(self.database_url, ids)


Faults = Callable[[Run], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    faults: Faults
    # Postings per second core banking sends; the stream must outlast the faults.
    rate: float
    worker_replicas: int = 1
    # The broker is restarted: what it held is lost, and must be reported.
    loses_broker_state: bool = False


@dataclass
class Outcome:
    scenario: str
    postings: int
    missed: int
    checks: dict[str, tuple[bool, str]]
    applied: dict[str, int]
    duplicates: int
    dead_letters: int
    drain_seconds: float | None
    restarts: dict[str, int]
    problems: list[tuple[int, str]]
    dead_letter_reasons: list[str]
    log_dir: Path

    @property
    def passed(self) -> bool:
        return all(ok for ok, _ in self.checks.values())

    @classmethod
    def crashed(cls, scenario: str, log_dir: Path, exc: BaseException) -> Outcome:
        """A scenario that could not run to its verdict (set-up, a bounded wait, a fault
        that could not be inflicted): a failure, with the reason."""
        return cls(
            scenario=scenario,
            postings=0,
            missed=0,
            checks={"ran to the end": (False, f"{type(exc).__name__}: {exc}")},
            applied={},
            duplicates=0,
            dead_letters=0,
            drain_seconds=None,
            restarts={},
            problems=evidence.commonest_problems(evidence.worker_lines(log_dir))
            if log_dir.exists()
            else [],
            dead_letter_reasons=[],
            log_dir=log_dir,
        )


async def run_scenario(
    scenario: Scenario, pg: Postgres, work_dir: Path, workload: Workload
) -> Outcome:
    log_dir = work_dir / scenario.name
    log_dir.mkdir(parents=True)
    if pg.proc is None or pg.proc.poll() is not None:
        await asyncio.to_thread(pg.start)  # an earlier scenario left it down
    database_url = await asyncio.to_thread(scenario_database, pg, scenario.name)
    broker = Broker(devstack.free_port())
    await asyncio.to_thread(broker.start)
    supervisor_log = (log_dir / "supervisor.log").open("a")
    try:
        await devstack.create_topics(broker.bootstrap)
        ports = {service: devstack.free_port() for service in devstack.SERVICES}

        def announce(message: str) -> None:
            supervisor_log.write(f"{time.strftime('%H:%M:%S')} {message}\n")
            supervisor_log.flush()

        stack = devstack.Stack(
            database_url,
            broker.bootstrap,
            ports,
            env_extra={"ENV": "test", "LOG_LEVEL": "INFO"},
            restart_policy=FAULT_RESTART_POLICY,
            worker_replicas=scenario.worker_replicas,
            announce=announce,
        )
        await asyncio.to_thread(stack.start_services, log_dir=log_dir)
        _stop_on_signals(stack)
        try:
            async with asyncio.timeout(SCENARIO_WITHIN):
                return await _drive(scenario, pg, broker, stack, database_url, log_dir, workload)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().remove_signal_handler(sig)
            # Blocking on purpose: this also runs when the suite is interrupted, and must
            # not be cut short by a second cancellation.
            stack.stop_services()
    finally:
        supervisor_log.close()
        broker.stop()


def _stop_on_signals(stack: devstack.Stack) -> None:
    """Ctrl-C or SIGTERM ends the scenario and tears it down. A terminal's Ctrl-C reaches
    the service processes too: the supervisor must not start them again meanwhile."""
    loop = asyncio.get_running_loop()
    scenario = asyncio.current_task()
    assert scenario is not None

    def interrupted() -> None:
        if stack.supervisor is not None:
            stack.supervisor.stopping = True
        scenario.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted)


async def _drive(
    scenario: Scenario,
    pg: Postgres,
    broker: Broker,
    stack: devstack.Stack,
    database_url: str,
    log_dir: Path,
    workload: Workload,
) -> Outcome:
    urls = {s: f"http://127.0.0.1:{p}" for s, p in stack.ports.items()}
    loans = core_banking.loan_ids(workload.loans)
    planned = core_banking.postings(loans, workload.postings, workload.missed_share)
    run = Run(scenario.name, pg, broker, stack, database_url, log_dir, planned, Stream(), urls)
    async with httpx.AsyncClient(base_url=urls["scheduler"], timeout=120) as scheduler:
        started = time.monotonic()
        await core_banking.register(scheduler, loans)
    run.note(f"{workload.loans} loans registered in {time.monotonic() - started:.1f}s")
    watcher = asyncio.create_task(_watch_readiness(run))
    try:
        stream_within = 3 * workload.postings / scenario.rate + 120
        run.flowing = asyncio.create_task(
            core_banking.post_repayments(
                broker.bootstrap, planned, run.stream, rate=scenario.rate, within=stream_within
            )
        )
        await scenario.faults(run)
        run.note("faults done")
        await run.flowing
        run.note(f"all {len(planned)} postings delivered ({run.stream.resent} sent again)")
        drain = await _drain(run, scenario)
        return await _verdict(run, scenario, drain)
    finally:
        watcher.cancel()
        if run.flowing is not None:
            run.flowing.cancel()


async def _watch_readiness(run: Run) -> None:
    """Record every change of each API's /readyz answer."""
    last: dict[str, tuple[int, str]] = {}
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            for service, url in run.api_urls.items():
                try:
                    response = await client.get(f"{url}/readyz")
                    answer = (response.status_code, response.text)
                except httpx.HTTPError as exc:
                    answer = (0, type(exc).__name__)
                if last.get(service) != answer:
                    last[service] = answer
                    run.readiness.append((time.monotonic(), service, *answer))
            await asyncio.sleep(READINESS_EVERY)


def _expected(run: Run, scenario: Scenario) -> set[str]:
    """The postings that must be applied: all of them, or after a broker restart those the
    new broker acknowledged."""
    if scenario.loses_broker_state:
        assert run.broker.restarted_at is not None, "the broker was never restarted"
        return run.stream.acked_after(run.broker.restarted_at)
    return set(run.stream.acked_at)


async def _drain(run: Run, scenario: Scenario) -> float | None:
    """Seconds from the last acknowledged posting until both consumers applied every
    expected one; None if they did not within DRAIN_WITHIN, or stopped moving for
    STALLED_AFTER (a dead-lettered posting never comes)."""
    assert run.stream.finished_at is not None
    expected = [uuid.UUID(e) for e in _expected(run, scenario)]
    deadline = time.monotonic() + DRAIN_WITHIN
    last: dict[str, int] = {}
    moved_at = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - moved_at < STALLED_AFTER:
        counts = await evidence.applied_counts(run.database_url, expected)
        if all(n == len(expected) for n in counts.values()):
            drained = time.monotonic() - run.stream.finished_at
            run.note(f"drained: {len(expected)} expected postings applied by both consumers")
            await _settle(run)
            return drained
        if counts != last:
            last, moved_at = counts, time.monotonic()
        await asyncio.sleep(1.0)
    run.note(f"NOT drained: {last} of {len(expected)}, stuck for {STALLED_AFTER:.0f}s or more")
    return None


async def _settle(run: Run) -> None:
    """Let the alerts relay publish and the scheduler apply alert-raised, until nothing
    moves for a few seconds (bounded)."""
    deadline = time.monotonic() + SETTLE_WITHIN
    previous: tuple[int, int] | None = None
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        tables = await evidence.read_tables(run.database_url, [], [])
        now = (tables.alerts_unpublished, tables.alert_raised_applied)
        if now != previous:
            previous, quiet_since = now, time.monotonic()
        elif tables.alerts_unpublished == 0 and time.monotonic() - quiet_since > 3:
            return
        await asyncio.sleep(0.5)


async def _verdict(run: Run, scenario: Scenario, drain: float | None) -> Outcome:
    every = [p.event_id for p in run.planned]
    missed = [p.event_id for p in run.planned if p.missed]
    expected = _expected(run, scenario)
    tables = await evidence.read_tables(run.database_url, every, missed)
    lines = evidence.log_lines(run.log_dir)
    workers = [line for line in lines if "-worker" in line.process]
    dlq_broker = await evidence.dead_letters_on_broker(run.broker.bootstrap)
    dlq_logged = evidence.dead_letters_logged(workers)
    checks: dict[str, tuple[bool, str]] = {}

    expected_uuids = [uuid.UUID(e) for e in expected]
    for consumer in evidence.CONSUMERS:
        done = await evidence.applied_ids(run.database_url, consumer, expected_uuids)
        missing = set(expected) - done
        detail = f"{len(done)}/{len(expected)}"
        passed = not missing
        if missing and scenario.loses_broker_state and len(missing) <= len(expected) // 100:
            # The embedded broker has been seen to acknowledge a few records (4 of 11,760)
            # that never appear in its log after a restart. No consumer can apply what the
            # broker does not hold: those are the broker's loss, counted and shown here;
            # a posting the broker holds and a consumer did not apply still fails.
            on_broker = await evidence.where_on_broker(
                run.broker.bootstrap, "repayment-posted", missing
            )
            passed = not on_broker
            detail += (
                f"; the {len(missing)} others: {len(missing) - len(on_broker)} acknowledged "
                f"by the broker but never in its log, {len(on_broker)} on it and not applied "
                f"{sorted(on_broker.values())[:10]}"
            )
        checks[f"{consumer}: every expected posting applied"] = (passed, detail)
    applied_missed = await evidence.applied_ids(
        run.database_url, "alerts", [uuid.UUID(m) for m in missed]
    )
    checks["every applied missed posting remembered once, its loan alerted"] = (
        tables.missed_remembered == tables.missed_remembered_distinct == len(applied_missed)
        and tables.loans_missed_with_alert == tables.loans_missed
        and tables.duplicate_alerts == 0,
        f"{tables.missed_remembered} remembered ({tables.missed_remembered_distinct} distinct) "
        f"of {len(applied_missed)} applied missed ({len(missed)} sent); "
        f"{tables.loans_missed_with_alert} of {tables.loans_missed} loans alerted; "
        f"{tables.duplicate_alerts} extra",
    )
    checks["no alert on a paid posting"] = (tables.alerts_on_paid == 0, str(tables.alerts_on_paid))
    checks["at most one open task per loan and method"] = (
        tables.open_task_clashes == 0,
        f"{tables.open_task_clashes} clashes",
    )
    checks["nothing dead-lettered"] = (
        dlq_broker == 0 and dlq_logged == 0,
        f"{dlq_broker} on the broker, {dlq_logged} logged",
    )
    if not scenario.loses_broker_state:
        checks["every alert-raised published and applied by the scheduler"] = (
            tables.alerts_unpublished == 0
            and tables.alert_raised_applied == tables.alerts_published,
            f"{tables.alert_raised_applied} applied of {tables.alerts_published} published, "
            f"{tables.alerts_unpublished} unpublished",
        )
    else:
        checks.update(await _loss_checks(run, expected, lines))
    checks.update(await _recovery_checks(run, scenario))
    checks.update(run.extra_checks)
    return Outcome(
        scenario=scenario.name,
        postings=len(every),
        missed=len(missed),
        checks=checks,
        applied=tables.applied,
        duplicates=tables.duplicate_alerts,
        dead_letters=max(dlq_broker, dlq_logged),
        drain_seconds=drain,
        restarts={
            name: process.restarts
            for name, process in (
                run.stack.supervisor.processes.items() if run.stack.supervisor else ()
            )
        },
        problems=evidence.commonest_problems(workers),
        dead_letter_reasons=evidence.dead_letter_reasons(workers),
        log_dir=run.log_dir,
    )


async def _loss_checks(
    run: Run, expected: set[str], lines: list[evidence.LogLine]
) -> dict[str, tuple[bool, str]]:
    """A broker restart loses what the old broker held and had not delivered: it must be
    reported (an ERROR in a worker's log, /readyz)."""
    assert run.broker.killed_at is not None and run.broker.restarted_at is not None
    before = run.stream.acked_before(run.broker.killed_at)
    between = len(run.stream.acked_at) - len(before) - len(expected)
    applied_before = {
        consumer: await evidence.applied_ids(
            run.database_url, consumer, [uuid.UUID(e) for e in before]
        )
        for consumer in evidence.CONSUMERS
    }
    lost = {consumer: len(before) - len(ids) for consumer, ids in applied_before.items()}
    logged = evidence.loss_in_logs([line for line in lines if "-worker" in line.process])
    answers = [(status, body) for _, _, status, body in run.readiness]
    said = evidence.loss_in_readiness(answers)
    run.note(
        f"postings acknowledged before the broker restart: {len(before)}, lost of them: "
        f"{lost}; after it: {len(expected)}; during it (counted on neither side): {between}"
    )
    sample = logged[0].message[:120] if logged else "-"
    return {
        "the broker restart lost something (the scenario bit)": (
            any(lost.values()),
            f"lost {lost}",
        ),
        "the loss is reported in a worker's log (ERROR)": (
            bool(logged),
            f"{len(logged)} lines, e.g. {sample!r}",
        ),
        "the loss is reported by /readyz": (
            bool(said),
            f"{said[0] if said else 'no readiness answer mentions it'}",
        ),
    }


# How long the APIs have, once the faults are over and the postings drained, to be ready.
READY_WITHIN = 30.0


async def _recovery_checks(run: Run, scenario: Scenario) -> dict[str, tuple[bool, str]]:
    """Every process runs again and every API answers ready (or names the loss) within
    `READY_WITHIN` seconds: a resumed replica reports again on its next tick."""
    assert run.stack.supervisor is not None
    down = [name for name, p in run.stack.supervisor.processes.items() if p.pid is None]
    not_ready: list[str] = []
    deadline = time.monotonic() + READY_WITHIN
    async with httpx.AsyncClient(timeout=5) as client:
        for service, url in run.api_urls.items():
            while True:
                try:
                    response = await client.get(f"{url}/readyz")
                    status, text = response.status_code, response.text
                except httpx.HTTPError as exc:
                    status, text = 0, type(exc).__name__
                reports_loss = scenario.loses_broker_state and evidence.loss_in_readiness(
                    [(status, text)]
                )
                if status == 200 or reports_loss:
                    break
                if time.monotonic() >= deadline:
                    not_ready.append(f"{service}: {status} {text[:400]}")
                    break
                await asyncio.sleep(1.0)
    return {
        "every process up at the end": (not down, ", ".join(down) or "all up"),
        "every API ready at the end": (not not_ready, "; ".join(not_ready) or "all ready"),
    }
