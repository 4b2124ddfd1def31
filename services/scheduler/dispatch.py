"""The dispatcher: gives open tasks without an agent to the agents of their loan's region.

Planning writes tasks without an agent and notifies `visit_tasks_awaiting_dispatch` in the
same transaction (`repository.notify_dispatch`); the dispatcher LISTENs on a connection of
its own and runs a pass when woken, and every `period_seconds` anyway, which covers a
notification missed while it was reconnecting. A pass is one transaction and three
statements whatever its size: the waiting tasks (`FOR UPDATE SKIP LOCKED`), the candidate
agents with their open load per due day, and one UPDATE of the assignments, chosen in
Python by `policy.assign_tasks`. An advisory lock lets one replica dispatch at a time, so
two replicas never count the same free capacity twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import policy, repository
from shared.db import unit_of_work
from shared.failures import backoff_seconds

log = logging.getLogger(__name__)


async def dispatch_pass(
    session: AsyncSession, batch: int, after: tuple[date, uuid.UUID] = repository.QUEUE_START
) -> tuple[int, int, tuple[date, uuid.UUID]]:
    """One pass in `session`, which holds the dispatch lock: up to `batch` waiting tasks
    after `after` read and placed. (tasks read, tasks assigned, the last task read)."""
    today = datetime.now(UTC).date()
    waiting = await repository.waiting_tasks(session, batch, today, after)
    if not waiting:
        return 0, 0, after
    roster = await repository.dispatch_roster(
        session, {t.region for t in waiting}, {t.due_on for t in waiting}
    )
    plan = policy.assign_tasks(waiting, roster, today)
    assigned = await repository.assign_tasks(session, plan, {t.task_id: t.due_on for t in waiting})
    last = max(waiting, key=lambda t: (t.due_on, t.task_id))
    return len(waiting), assigned, (last.due_on, last.task_id)


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        database_url: str,
        *,
        period_seconds: float = 1.0,
        batch_size: int = 1000,
        probe_seconds: float = 5.0,
    ) -> None:
        self._sessions = sessions
        # The LISTEN connection is plain asyncpg: a pooled connection would be handed back
        # (and its LISTEN with it) after each use.
        self._dsn = (
            make_url(database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        self._period = period_seconds
        self._batch = batch_size
        self._probe = probe_seconds
        self._wake = asyncio.Event()
        # Set while the LISTEN connection is up; notifications received, for the tests.
        self.listening = asyncio.Event()
        self.notifications = 0

    async def dispatch_once(
        self, after: tuple[date, uuid.UUID] = repository.QUEUE_START
    ) -> tuple[int, int]:
        """One pass over the waiting tasks after `after`: (tasks read, tasks assigned).
        (0, 0) while another replica holds the dispatch lock; it sees the same
        notifications and does the work."""
        read, assigned, _ = await self._pass(after)
        return read, assigned

    async def _pass(self, after: tuple[date, uuid.UUID]) -> tuple[int, int, tuple[date, uuid.UUID]]:
        async with unit_of_work(self._sessions) as session:
            if not await repository.try_dispatch_lock(session):
                return 0, 0, after
            return await dispatch_pass(session, self._batch, after)

    async def drain(self) -> int:
        """Passes through the whole queue of dispatchable tasks, soonest first; how many
        were assigned. Each pass starts after the last task the one before it read, so a
        head of tasks a pass could not place never hides the ones behind it."""
        total, after = 0, repository.QUEUE_START
        while True:
            read, assigned, after = await self._pass(after)
            total += assigned
            if read < self._batch:
                return total

    async def run(self) -> None:
        """Dispatch until cancelled; database outages are waited out, never fatal."""
        listener = asyncio.create_task(self._listen(), name="dispatch-listener")
        failures = 0
        try:
            while True:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel
                # that arrives as the wait ends, and the dispatcher would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._period):
                        await self._wake.wait()
                # Cleared before the pass: a task planned during it wakes the next one.
                self._wake.clear()
                try:
                    assigned = await self.drain()
                except Exception as exc:  # noqa: BLE001 - the next pass retries
                    failures += 1
                    log.warning("dispatch pass failed (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(backoff_seconds(failures, base=self._period))
                    continue
                failures = 0
                if assigned:
                    log.info("dispatched %d tasks", assigned)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    def wake(self) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        """LISTEN for new waiting tasks, reconnecting after the database restarts."""
        attempt = 0
        while True:
            conn: asyncpg.Connection[Any] | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=self._probe)
                await conn.add_listener(repository.DISPATCH_CHANNEL, self._notified)
                attempt = 0
                self.listening.set()
                # Tasks planned while nobody listened are found by this pass.
                self.wake()
                await self._until_lost(conn)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                attempt += 1
                if attempt == 1:
                    log.warning("dispatch listener lost the database (%s)", type(exc).__name__)
            finally:
                self.listening.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(self._probe):
                            await conn.close()
            await asyncio.sleep(backoff_seconds(max(attempt, 1), base=0.5))

    async def _until_lost(self, conn: asyncpg.Connection[Any]) -> None:
        """Return when the LISTEN connection is gone: closed by the server, or not
        answering a probe (a half-open socket is never closed by itself)."""
        while not conn.is_closed():
            await asyncio.sleep(self._probe)
            await conn.execute("SELECT 1", timeout=self._probe)

    def _notified(self, *_: object) -> None:
        self.notifications += 1
        self.wake()
