"""What the visits worker keeps, and for how long, besides the outbox.

- Idempotency keys of captures: kept `IDEMPOTENCY_KEY_DAYS` (7) after the capture, then
  cleared. A capture resent later is new, unless it carries the client-generated
  `visit_id` it was first sent with: that id is permanent, so the resend still replays.
  Partners' report ids are never cleared (a report is one visit, ever).
- Drafts: deleted `DRAFT_RETENTION_DAYS` (30) after their last change.

The worker sweeps every `RETENTION_SWEEP_SECONDS`, in batches of `SWEEP_BATCH` rows, one
short transaction each (the first sweep after a deploy may find months of keys; one
statement over all of them would outlast the statement timeout every hour). A sweep that
fails (the database away) is logged and tried again at the next period: nothing is lost
by a late sweep, the data is only kept longer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.visits import repository
from services.visits.settings import VisitsSettings
from shared.db import unit_of_work, utcnow

log = logging.getLogger(__name__)

# Rows changed per transaction: a fraction of a second of work, short row locks.
SWEEP_BATCH = 5000


@dataclass(frozen=True)
class Swept:
    keys_expired: int
    drafts_purged: int


async def sweep(
    sessions: async_sessionmaker[AsyncSession],
    settings: VisitsSettings,
    now: datetime,
    batch: int = SWEEP_BATCH,
) -> Swept:
    keys_before = now - timedelta(days=settings.idempotency_key_days)
    drafts_before = now - timedelta(days=settings.draft_retention_days)
    keys = drafts = 0
    while True:
        async with unit_of_work(sessions) as session:
            expired = await repository.expire_idempotency_keys(session, keys_before, batch)
            purged = await repository.purge_drafts(session, drafts_before, batch)
        keys, drafts = keys + expired, drafts + purged
        if expired < batch and purged < batch:
            break
    if keys or drafts:
        log.info("retention: %d idempotency keys expired, %d drafts purged", keys, drafts)
    return Swept(keys, drafts)


async def run(sessions: async_sessionmaker[AsyncSession], settings: VisitsSettings) -> None:
    """Sweep every period until cancelled."""
    while True:
        try:
            await sweep(sessions, settings, utcnow())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention sweep failed; next attempt in one period")
        await asyncio.sleep(settings.retention_sweep_seconds)
