"""The acknowledgement SLA: an open alert nobody acknowledged within the deadline of its
severity goes to the supervisor queue (a flag on the alert and a line of its history).

Run periodically by the alerts worker. The clock is injected, so tests move time instead
of waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alerts import repository
from services.alerts.triage import SYSTEM, HistoryEntry
from shared.db import unit_of_work
from shared.vocabulary import AlertStatus, Severity

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def deadlines(minutes: Mapping[Severity, float]) -> dict[Severity, timedelta]:
    return {severity: timedelta(minutes=m) for severity, m in minutes.items()}


class SlaSweep:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        deadlines: Mapping[Severity, timedelta],
        *,
        every_seconds: float,
        clock: Clock = system_clock,
    ) -> None:
        self._sessions = sessions
        self._deadlines = dict(deadlines)
        self._every = every_seconds
        self._clock = clock

    async def sweep(self) -> int:
        """Queue the alerts past their deadline for the supervisor; returns how many."""
        now = self._clock()
        cutoffs = {str(severity): now - due for severity, due in self._deadlines.items()}
        async with unit_of_work(self._sessions) as session:
            flagged = await repository.queue_for_supervisor(session, cutoffs, now)
            history = [
                asdict(
                    HistoryEntry(
                        alert_id,
                        now,
                        SYSTEM,
                        "supervisor_queue",
                        AlertStatus.OPEN,
                        AlertStatus.OPEN,
                        severity,
                        f"not acknowledged within {_span(self._deadlines[Severity(severity)])} "
                        f"of becoming {severity} (since {since.isoformat()}): "
                        "sent to the supervisor queue",
                    )
                )
                for alert_id, severity, since in flagged
            ]
            await repository.add_history(session, history)
        if flagged:
            log.info(
                "%d alerts past their acknowledgement deadline sent to supervisors", len(flagged)
            )
        return len(flagged)

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is down; the next round tries again
                log.exception("SLA sweep failed; retrying in %.0fs", self._every)
            await asyncio.sleep(self._every)


def _span(due: timedelta) -> str:
    minutes = int(due.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"
