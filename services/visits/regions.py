"""The region of visits recorded before migration 0006, from the visits worker's own
projection of `loan-registered` (loan → region; the scheduler publishes it for every loan
it registers, and again when a loan's facts change).

A batch of events upserts `visits.loan_regions` (an older announcement than the stored one
changes nothing) and, in the same statement's transaction, sets the region of the batch's
loans' visits that have none. Only visits chained in format 1 get one: those are the visits
of before 0006, whose chain entries do not cover the region, so filling it keeps every
proof holding (a visit recorded since has its region from the capture, chained).
Captures keep taking the region the scheduler tells them at capture time; this projection
only fills what was never told.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from services.visits.models import LoanRegion, Visit, VisitChainEntry
from shared.events import LoanRegistered

log = logging.getLogger(__name__)

# The chain format whose entries do not commit to the region (services/visits/chain.py).
REGIONLESS_FORMAT = 1


def latest_per_loan(events: Sequence[LoanRegistered]) -> dict[str, LoanRegistered]:
    """Each loan's newest event of the batch (the later one on a tie: a partition's events
    come in their order)."""
    latest: dict[str, LoanRegistered] = {}
    for event in events:
        kept = latest.get(event.loan_id)
        if kept is None or event.occurred_at >= kept.occurred_at:
            latest[event.loan_id] = event
    return latest


async def on_loans_registered(session: AsyncSession, events: Sequence[LoanRegistered]) -> None:
    latest = latest_per_loan(events)
    if not latest:
        return
    rows = [
        {"loan_id": loan_id, "region": event.region, "as_of": event.occurred_at}
        for loan_id, event in sorted(latest.items())
    ]
    stmt = insert(LoanRegion).values(rows)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[col(LoanRegion.loan_id)],
            set_={"region": stmt.excluded.region, "as_of": stmt.excluded.as_of},
            where=col(LoanRegion.as_of) <= stmt.excluded.as_of,
        )
    )
    count = await fill_regions(session, list(latest))
    if count:
        log.info("region filled in on %d visits recorded before it was kept", count)


async def fill_regions(
    session: AsyncSession, loan_ids: list[str] | None = None, batch: int | None = None
) -> int:
    """Set the projected region on visits without one (of `loan_ids`, or of any loan, up
    to `batch` of them: the worker's periodic backfill); how many were set. Format-1
    visits only (this module's docstring); the rows are locked in visit-id order."""
    # Aliases: the subquery stands alone, not correlated to the UPDATE's own tables.
    visit, entry, known = aliased(Visit), aliased(VisitChainEntry), aliased(LoanRegion)
    regionless = select(col(visit.visit_id)).where(
        col(visit.region).is_(None),
        col(entry.visit_id) == col(visit.visit_id),
        col(entry.format) == REGIONLESS_FORMAT,
        col(known.loan_id) == col(visit.loan_id),
    )
    if loan_ids is not None:
        regionless = regionless.where(col(visit.loan_id).in_(loan_ids))
    regionless = regionless.order_by(col(visit.visit_id)).with_for_update(
        of=visit, skip_locked=True
    )
    if batch is not None:
        regionless = regionless.limit(batch)
    filled = await session.execute(
        update(Visit)
        .where(
            col(Visit.visit_id).in_(regionless),
            col(LoanRegion.loan_id) == col(Visit.loan_id),
        )
        .values(region=LoanRegion.region)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(filled, "rowcount", 0))
