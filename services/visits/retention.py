"""What the visits worker keeps, and for how long, besides the outbox.

- Idempotency keys of captures: kept `IDEMPOTENCY_KEY_DAYS` (7) after the capture, then
  cleared. A capture resent later is new, unless it carries the client-generated
  `visit_id` it was first sent with: that id is permanent, so the resend still replays.
  Partners' report ids are never cleared (a report is one visit, ever).
- Drafts: deleted `DRAFT_RETENTION_DAYS` (30) after their last change.
- Evidence uploaded (`POST /v1/evidence`) and never attached to a visit: its row and, once
  no other row names the same bytes, its stored object are deleted
  `UNATTACHED_EVIDENCE_DAYS` (7) after the upload, unless a draft of its uploader still
  lists it. The rows go first (committed), then the objects: a crash in between leaves an
  object no row names, which only costs storage (and is reused by the next upload of the
  same bytes).

- The region of visits recorded before migration 0006, from the worker's projection of
  `loan-registered` (regions.py): set as each loan's event is applied, and here for any
  such visit whose loan was projected before (a backfill).

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

from services.visits import regions, repository
from services.visits.evidence_store import EvidenceStore
from services.visits.settings import VisitsSettings
from shared.db import unit_of_work, utcnow

log = logging.getLogger(__name__)

# Rows changed per transaction: a fraction of a second of work, short row locks.
SWEEP_BATCH = 5000
# Objects deleted under one transaction's locks: each delete is a file or an HTTP call.
OBJECTS_PER_TRANSACTION = 100


@dataclass(frozen=True)
class Swept:
    keys_expired: int
    drafts_purged: int
    evidence_purged: int = 0
    objects_deleted: int = 0
    regions_filled: int = 0


async def sweep(
    sessions: async_sessionmaker[AsyncSession],
    settings: VisitsSettings,
    now: datetime,
    store: EvidenceStore,
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
    regions_filled = 0
    while True:
        async with unit_of_work(sessions) as session:
            filled = await regions.fill_regions(session, batch=batch)
        regions_filled += filled
        if filled < batch:
            break
    evidence, objects = await purge_unattached_evidence(
        sessions, store, now - timedelta(days=settings.unattached_evidence_days), batch
    )
    if keys or drafts or evidence or regions_filled:
        log.info(
            "retention: %d idempotency keys expired, %d drafts purged, %d unattached "
            "evidence deleted (%d stored objects), region filled on %d visits",
            keys,
            drafts,
            evidence,
            objects,
            regions_filled,
        )
    return Swept(keys, drafts, evidence, objects, regions_filled)


async def purge_unattached_evidence(
    sessions: async_sessionmaker[AsyncSession],
    store: EvidenceStore,
    uploaded_before: datetime,
    batch: int = SWEEP_BATCH,
) -> tuple[int, int]:
    """Delete the evidence uploaded before then and never attached, in batches, and the
    stored objects no remaining row names; (rows, objects) deleted."""
    rows = objects = 0
    while True:
        async with unit_of_work(sessions) as session:
            hashes = await repository.purge_unattached_evidence(session, uploaded_before, batch)
        rows += len(hashes)
        objects += await _delete_objects(sessions, store, hashes)
        if len(hashes) < batch:
            return rows, objects


async def _delete_objects(
    sessions: async_sessionmaker[AsyncSession], store: EvidenceStore, hashes: list[str]
) -> int:
    """Delete the objects of `hashes` that no evidence row names, each under its exclusive
    lock (an upload of the same bytes holds it shared until its row commits)."""
    deleted = 0
    for start in range(0, len(hashes), OBJECTS_PER_TRANSACTION):
        chunk = sorted(set(hashes[start : start + OBJECTS_PER_TRANSACTION]))
        async with unit_of_work(sessions) as session:
            await repository.lock_objects(session, chunk, shared=False)
            named = await repository.referenced_objects(session, chunk)
            for sha256 in chunk:
                if sha256 not in named:
                    await store.delete(sha256)
                    deleted += 1
    return deleted


async def run(
    sessions: async_sessionmaker[AsyncSession], settings: VisitsSettings, store: EvidenceStore
) -> None:
    """Sweep every period until cancelled."""
    while True:
        try:
            await sweep(sessions, settings, utcnow(), store)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention sweep failed; next attempt in one period")
        await asyncio.sleep(settings.retention_sweep_seconds)
