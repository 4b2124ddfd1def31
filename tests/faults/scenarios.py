"""The faults, each struck while core banking's postings flow. Every wait is bounded."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import asyncpg

from tests.faults import evidence
from tests.faults.run import Run, Scenario

CONSUMER_WORKERS = ("scheduler-worker", "alerts-worker")


async def steady(run: Run) -> None:
    """No fault: the control. If this fails, the harness is wrong, not the system."""
    await run.wait_for_acked(1.0)


async def worker_kills(run: Run, rounds: int = 6, up_for: float = 2.0) -> None:
    """SIGKILL the scheduler and alerts workers in turn, each once it has been back up
    for `up_for` seconds, `rounds` times each; only the supervisor brings them back."""
    await run.wait_for_acked(0.1)
    killed: dict[str, int | None] = dict.fromkeys(CONSUMER_WORKERS)
    for round_no in range(1, rounds + 1):
        for name in CONSUMER_WORKERS:
            pid = await _running_for(run, name, up_for, other_than=killed[name])
            os.kill(pid, signal.SIGKILL)
            killed[name] = pid
            run.note(f"SIGKILL {name} (pid {pid}), round {round_no}")
            await asyncio.sleep(1.0)  # the two kills of a round land at different moments
    await asyncio.gather(
        *(_running_for(run, name, 0.0, other_than=killed[name]) for name in CONSUMER_WORKERS)
    )
    run.extra_checks["each consumer worker killed and restarted"] = _restarted_check(
        run, CONSUMER_WORKERS, rounds
    )


async def _running_for(
    run: Run, name: str, seconds: float, *, other_than: int | None = None, within: float = 60.0
) -> int:
    """The pid of `name` once it has been running for `seconds`, in a process other than
    the one killed last (which may not have been reaped yet)."""
    deadline = time.monotonic() + within
    assert run.stack.supervisor is not None
    while time.monotonic() < deadline:
        process = run.stack.supervisor.processes[name]
        pid = process.pid
        up = time.monotonic() - process.started_at
        if pid is not None and pid != other_than and up >= seconds:
            return pid
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{name} was not running again within {within}s")


def _restarted_check(run: Run, names: tuple[str, ...], kills: int) -> tuple[bool, str]:
    restarts = {name: run.stack.restarts(name) for name in names}
    return all(n >= kills for n in restarts.values()), f"restarts {restarts} for {kills} kills"


async def db_restart(run: Run, down_for: float = 3.0, hold_for: float = 10.0) -> None:
    """Kill PostgreSQL's postmaster and start it again; the second time, take every
    connection slot the moment it is back and hold them for `hold_for` seconds."""
    await run.wait_for_acked(0.15)
    await asyncio.to_thread(run.pg.kill)
    run.note("SIGKILL PostgreSQL postmaster")
    await asyncio.sleep(down_for)
    await asyncio.to_thread(run.pg.start)
    run.note("PostgreSQL started again")

    await run.wait_for_acked(0.45)
    await asyncio.to_thread(run.pg.kill)
    run.note("SIGKILL PostgreSQL postmaster (second time)")
    await asyncio.sleep(down_for)
    await asyncio.to_thread(run.pg.start)
    held, full = await _take_every_slot(run.pg.url("postgres"))
    run.note(f"PostgreSQL started again; holding {len(held)} connections (slots full: {full})")
    try:
        await asyncio.sleep(hold_for)
    finally:
        await asyncio.gather(*(conn.close() for conn in held), return_exceptions=True)
    run.note("connection slots released")
    run.extra_checks["connection slots were full (the scenario bit)"] = (
        full,
        f"held {len(held)} connections for {hold_for:.0f}s",
    )


async def _take_every_slot(
    url: str, wave: int = 20, within: float = 10.0
) -> tuple[list[asyncpg.Connection], bool]:
    """Open connections in waves until PostgreSQL refuses one for want of slots; what was
    opened, and whether the slots ran out."""
    dsn = url.replace("+asyncpg", "")
    held: list[asyncpg.Connection] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        opened = await asyncio.gather(
            *(asyncpg.connect(dsn) for _ in range(wave)), return_exceptions=True
        )
        held += [c for c in opened if isinstance(c, asyncpg.Connection)]
        if any(isinstance(c, asyncpg.TooManyConnectionsError) for c in opened):
            return held, True
    return held, False


async def broker_restart(run: Run, backlog_at_least: int = 500, within: float = 60.0) -> None:
    """Stop the broker while postings wait in it, and start an empty one on the same port.
    Topics are not created for it: the workers must see to that.

    The workers keep up with the stream, so the backlog is made: both consumer workers are
    frozen (SIGSTOP) while it builds up, and thawed once the empty broker is up."""
    await run.wait_for_acked(0.4)
    frozen = [
        pid
        for consumer in evidence.CONSUMERS
        if (pid := run.stack.pid(f"{consumer}-worker")) is not None
    ]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + within
        while True:
            backlog = len(run.stream.acked_at) - min((await run.applied()).values())
            if backlog >= backlog_at_least or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await asyncio.to_thread(run.broker.restart)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    run.note(f"broker restarted empty on port {run.broker.port} (backlog was ~{backlog})")


async def replica_pause(run: Run, pause_for: float = 60.0, grace: float = 20.0) -> None:
    """SIGSTOP one of the two replicas of each consumer worker for `pause_for` seconds,
    caught in the middle of a batch (its transaction open). The other replica must take its
    partitions over and keep going; progress is measured between `grace` seconds into the
    pause (the group's session timeout and rebalance) and its end."""
    await run.wait_for_acked(0.15)
    caught = await asyncio.gather(
        *(_pause_mid_batch(run, consumer) for consumer in evidence.CONSUMERS)
    )
    paused = {name: pid for name, pid, _ in caught}
    try:
        await asyncio.sleep(grace)
        early, delivered = await run.applied(), len(run.stream.acked_at)
        await asyncio.sleep(pause_for - grace)
        late = await run.applied()
        sessions = await evidence.session_states(run.database_url)
    finally:
        for name, pid in paused.items():
            os.kill(pid, signal.SIGCONT)
            run.note(f"SIGCONT {name} (pid {pid})")
    for consumer, (name, _, mid_batch) in zip(evidence.CONSUMERS, caught, strict=True):
        moved = late[consumer] - early[consumer]
        # Progress is owed only if there was work left at the time.
        owed = early[consumer] < delivered
        run.extra_checks[f"{consumer}: progress while a replica was paused"] = (
            moved > 0 or not owed,
            f"{moved} postings applied in the last {pause_for - grace:.0f}s of the pause "
            f"({early[consumer]} applied, {delivered} delivered before); "
            f"database sessions at its end: {sessions}",
        )
        run.extra_checks[f"{name} paused with its transaction open (the scenario bit)"] = (
            mid_batch,
            "caught mid-batch" if mid_batch else "only ever caught between batches",
        )


async def _pause_mid_batch(run: Run, consumer: str, attempts: int = 60) -> tuple[str, int, bool]:
    """SIGSTOP replica 1 of `consumer`'s worker at a moment its transaction is open: a
    session of its schema left idle in transaction by the stop. Caught between batches, it
    is resumed and tried again a moment later; the last attempt stays paused regardless."""
    name = f"{consumer}-worker-1"
    for attempt in range(1, attempts + 1):
        pid = run.stack.pid(name)
        if pid is None:
            raise RuntimeError(f"{name} is not running")
        os.kill(pid, signal.SIGSTOP)
        # Short of any sane idle-in-transaction timeout, which would end the session.
        await asyncio.sleep(0.7)
        if await evidence.open_transaction_idle(run.database_url, consumer, 0.5):
            run.note(f"SIGSTOP {name} (pid {pid}) mid-batch, attempt {attempt}")
            return name, pid, True
        if attempt == attempts:
            run.note(f"SIGSTOP {name} (pid {pid}), never caught mid-batch")
            return name, pid, False
        os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.05 * (attempt % 7))  # vary the phase against its batches
    raise AssertionError("unreachable")


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("worker-kills", "scheduler and alerts workers SIGKILLed", worker_kills, 400),
        Scenario("db-restart", "PostgreSQL killed twice, then slots full", db_restart, 400),
        Scenario(
            "broker-restart",
            "broker replaced by an empty one",
            broker_restart,
            800,
            loses_broker_state=True,
        ),
        Scenario(
            "replica-pause",
            "one of two replicas of each worker paused",
            replica_pause,
            200,
            worker_replicas=2,
        ),
        Scenario("steady", "no fault (control, not run by default)", steady, 1_000),
    )
}
DEFAULT = ("worker-kills", "db-restart", "broker-restart", "replica-pause")
