"""All visits SQL, and who may read what.

Reads are narrowed in SQL by `visible_visits` and `visible_evidence`, so a visit or a file
the reader may not see is absent (a 404, or missing from a list), never fetched and then
refused. A visit carries its loan's region as the scheduler told it at capture; visits
recorded before that (region NULL) get it from the worker's projection of
`loan-registered` (regions.py) and are read by ops and admin only until then.

| route                                     | agent            | supervisor       | ops, admin  |
|-------------------------------------------|------------------|------------------|-------------|
| `GET /v1/visits`                          | its own visits   | its region's     | every visit |
|                                           | (an `agent_id`   | visits, by the   | by the      |
|                                           | is no filter)    | filters          | filters     |
| `GET /v1/visits/{id}`, `…/{id}/proof`     | its own visit    | its region's     | any visit   |
| `GET /v1/visits/verify`                   | none (403)       | every chain      | every chain |
| `POST /v1/visits/{id}/review`             | none (403)       | its region's,    | none (403)  |
|                                           |                  | not its own      |             |
| `POST /v1/visits/{id}/corrections`        | its own visit    | one it recorded  | none (403)  |
| `/v1/visit-drafts…`                       | its own drafts   | its own drafts   | none (403)  |
| `GET /v1/evidence/{id}`                   | what it uploaded | what it uploaded,| any         |
|                                           |                  | and its region's |             |
|                                           |                  | visits'          |             |

A supervisor's token without a `region` claim reads nothing here (403). Verification is
oversight of the record as a whole and reports only hashes, ids and seqs, so it is not
narrowed. Partners (`integration`) report observations but read nothing here (403). A
partner's report becomes a visit whose agent is the partner, so no agent sees it as its own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Text,
    cast,
    delete,
    false,
    func,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import Label
from sqlmodel import col

from services.visits import chain
from services.visits.models import (
    Evidence,
    ThirdPartyReport,
    Visit,
    VisitChainEntry,
    VisitDraft,
    VisitReview,
)
from services.visits.schemas import ReviewState
from shared.auth import Principal, Role
from shared.errors import Problem
from shared.pagination import Page, keyset_page

T = TypeVar("T")

READERS: tuple[Role, ...] = ("agent", "supervisor", "ops", "admin")
# Verifying the record is oversight, not capture: no agent verifies its own visits.
AUDITORS: tuple[Role, ...] = ("supervisor", "ops", "admin")
VISIT_ORDER = (col(Visit.created_at), col(Visit.visit_id))

# The first key of the two-key advisory locks serialising each loan's review chain: its own lock
# space, apart from the one-key locks of the outbox relay.
CHAIN_LOCK_CLASS = 7301
# The first key of the two-key advisory locks on an evidence object (by its SHA-256): held
# shared by an upload from its put to its commit, exclusively by the cleanup deleting it.
OBJECT_LOCK_CLASS = 7302
# Rows fetched per round trip while verifying a whole chain.
VERIFY_BATCH = 1000


def supervised_region(who: Principal) -> str:
    """The region a supervisor oversees; a 403 for a supervisor's token without one."""
    if who.region is None:
        raise Problem(403, "Forbidden", "a supervisor's token must name the region it oversees")
    return who.region


def visible_visits(who: Principal) -> ColumnElement[bool]:
    """The visits `who` may read: an agent its own, a supervisor its region's, ops and
    admin all (the table in this module's docstring)."""
    if who.is_agent:
        return col(Visit.agent_id) == who.sub
    if who.role == "supervisor":
        return col(Visit.region) == supervised_region(who)
    if who.role in ("ops", "admin"):
        return true()
    return false()


def visible_evidence(who: Principal) -> ColumnElement[bool]:
    """The evidence `who` may fetch: its own uploads; for a supervisor also what is
    attached to its region's visits; for ops and admin all. Never another agent's."""
    own = col(Evidence.uploaded_by) == who.sub
    if who.is_agent:
        return own
    if who.role == "supervisor":
        region = supervised_region(who)
        of_region = select(col(Visit.visit_id)).where(col(Visit.region) == region)
        return or_(own, col(Evidence.visit_id).in_(of_region))
    if who.role in ("ops", "admin"):
        return true()
    return false()


async def get_visit_visible_to(
    session: AsyncSession, visit_id: uuid.UUID, who: Principal
) -> Visit | None:
    """The visit, if `who` may read it (`visible_visits`); None as if it did not exist."""
    stmt = select(Visit).where(col(Visit.visit_id) == visit_id, visible_visits(who))
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_by_idempotency_key(
    session: AsyncSession, agent_id: str, idempotency_key: str
) -> Visit | None:
    stmt = select(Visit).where(
        col(Visit.agent_id) == agent_id, col(Visit.idempotency_key) == idempotency_key
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_by_task(session: AsyncSession, task_id: uuid.UUID) -> Visit | None:
    """The first version of the visit that did the task (corrections carry its task)."""
    stmt = select(Visit).where(
        col(Visit.task_id) == task_id, col(Visit.corrects_visit_id).is_(None)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_by_id(session: AsyncSession, visit_id: uuid.UUID) -> Visit | None:
    """The visit with this id, whoever recorded it (a client-generated id's replay)."""
    stmt = select(Visit).where(col(Visit.visit_id) == visit_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def lock_visit_visible_to(
    session: AsyncSession, visit_id: uuid.UUID, who: Principal
) -> Visit | None:
    """The visit, locked until the transaction ends, if `who` may read it: a review and a
    correction of one version (or two of either) are decided one after the other."""
    stmt = (
        select(Visit)
        .where(col(Visit.visit_id) == visit_id, visible_visits(who))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def set_review_state(session: AsyncSession, visit_id: uuid.UUID, state: ReviewState) -> None:
    await session.execute(
        update(Visit)
        .where(col(Visit.visit_id) == visit_id)
        .values(review_state=state)
        .execution_options(synchronize_session=False)
    )


async def corrections_of(
    session: AsyncSession, visit_ids: list[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """For each of the versions that has been corrected, the version correcting it."""
    if not visit_ids:
        return {}
    stmt = select(col(Visit.corrects_visit_id), col(Visit.visit_id)).where(
        col(Visit.corrects_visit_id).in_(visit_ids)
    )
    rows = (await session.execute(stmt)).all()
    return {row[0]: row[1] for row in rows if row[0] is not None}


# --- review ------------------------------------------------------------------------------


async def reviews_of(
    session: AsyncSession, visit_ids: list[uuid.UUID]
) -> dict[uuid.UUID, VisitReview]:
    """The decision on each of the versions that has one, in one query."""
    if not visit_ids:
        return {}
    stmt = select(VisitReview).where(col(VisitReview.visit_id).in_(visit_ids))
    return {row.visit_id: row for row in (await session.execute(stmt)).scalars()}


async def review_chain_head(session: AsyncSession, loan_id: str) -> tuple[int, str] | None:
    """The seq and entry hash of the loan's last review decision (the caller holds the
    loan's chain lock), or None before its first."""
    stmt = (
        select(col(VisitReview.seq), col(VisitReview.entry_hash))
        .where(col(VisitReview.loan_id) == loan_id)
        .order_by(col(VisitReview.seq).desc())
        .limit(1)
    )
    row = (await session.execute(stmt)).one_or_none()
    return (row[0], row[1]) if row is not None else None


async def add_review(session: AsyncSession, review: VisitReview) -> None:
    session.add(review)
    await session.flush()


async def stored_reviews(
    session: AsyncSession, loan_id: str | None
) -> AsyncIterator[chain.StoredEntry]:
    """Every review decision (of one loan, or all) with what it hashes over, ordered by
    loan and seq: one streamed query. The reviewed version's entry hash comes from its
    chain entry, which the visits' own chain vouches for."""
    fields = [f for f in chain.REVIEW_FIELDS if f != "visit_entry_hash"]
    columns: list[Any] = [
        col(VisitReview.seq),
        col(VisitReview.prev_hash),
        col(VisitReview.payload_hash),
        col(VisitReview.entry_hash),
        *(col(getattr(VisitReview, name)).label(f"r_{name}") for name in fields),
        col(VisitChainEntry.entry_hash).label("visit_entry_hash"),
    ]
    stmt = (
        select(*columns)
        .outerjoin(VisitChainEntry, col(VisitChainEntry.visit_id) == col(VisitReview.visit_id))
        .order_by(col(VisitReview.loan_id), col(VisitReview.seq))
        .execution_options(yield_per=VERIFY_BATCH)
    )
    if loan_id is not None:
        stmt = stmt.where(col(VisitReview.loan_id) == loan_id)
    result = await session.stream(stmt)
    async for row in result.mappings():
        review = {name: row[f"r_{name}"] for name in fields}
        review["decision"] = str(review["decision"])
        review["visit_entry_hash"] = row["visit_entry_hash"]
        yield chain.StoredEntry(
            loan_id=row["r_loan_id"],
            seq=row["seq"],
            visit_id=row["r_visit_id"],
            prev_hash=row["prev_hash"],
            payload_hash=row["payload_hash"],
            entry_hash=row["entry_hash"],
            visit=review,
        )


# The review state each version's chained facts give it: corrected → superseded, else its
# decision's, else pending. What `visits.review_state` must agree with.
_DERIVED_STATE = """
    CASE
        WHEN EXISTS (SELECT 1 FROM visits.visits AS c WHERE c.corrects_visit_id = v.visit_id)
            THEN 'superseded'
        WHEN r.decision = 'approve' THEN 'approved'
        WHEN r.decision = 'return' THEN 'returned'
        ELSE 'pending'
    END
"""


async def first_misstated_review(
    session: AsyncSession, loan_id: str | None
) -> tuple[str, uuid.UUID, str] | None:
    """The earliest version whose stored `review_state` is not what its decision and
    corrections say (a state flipped with SQL): (loan_id, visit_id, stored state)."""
    sql = (
        "SELECT v.loan_id, v.visit_id, v.review_state FROM visits.visits AS v"
        " LEFT JOIN visits.visit_reviews AS r ON r.visit_id = v.visit_id"
        f" WHERE v.review_state <> {_DERIVED_STATE}"
        + (" AND v.loan_id = :loan_id" if loan_id is not None else "")
        + " ORDER BY v.loan_id, v.created_at, v.visit_id LIMIT 1"
    )
    row = (await session.execute(text(sql), {"loan_id": loan_id})).one_or_none()
    return (row[0], row[1], row[2]) if row is not None else None


@dataclass(frozen=True)
class VisitFilter:
    """What a list of visits is narrowed to; None leaves a criterion out."""

    agent_id: str | None = None
    loan_id: str | None = None
    method: str | None = None
    outcome: str | None = None
    started_from: datetime | None = None
    started_before: datetime | None = None
    review_state: str | None = None


async def list_visits(
    session: AsyncSession,
    who: Principal,
    where: VisitFilter,
    *,
    cursor: str | None,
    limit: int,
    to_item: Callable[[Visit], T],
) -> Page[T]:
    """A page of the visits `who` may read, narrowed by `where`, in the order recorded."""
    stmt = select(Visit).where(visible_visits(who))
    # An agent's own visits are its list: the agent it names is not a filter on them.
    agent_id = None if who.is_agent else where.agent_id
    for column, value in (
        (Visit.agent_id, agent_id),
        (Visit.loan_id, where.loan_id),
        (Visit.method, where.method),
        (Visit.outcome, where.outcome),
        (Visit.review_state, where.review_state),
    ):
        if value is not None:
            stmt = stmt.where(col(column) == value)
    if where.started_from is not None:
        stmt = stmt.where(col(Visit.started_at) >= where.started_from)
    if where.started_before is not None:
        stmt = stmt.where(col(Visit.started_at) < where.started_before)
    return await keyset_page(
        session, stmt, key=VISIT_ORDER, cursor=cursor, limit=limit, to_item=to_item
    )


async def lock_chain_of(session: AsyncSession, loan_id: str) -> None:
    """Serialise appends to one loan's chain of review decisions until the transaction
    ends: two decisions on a loan at once still make one chain (the unique (loan_id, seq)
    is the backstop). Visits' own chain is appended through `chain_heads` (append.py)."""
    await session.execute(
        select(func.pg_advisory_xact_lock(CHAIN_LOCK_CLASS, func.hashtext(loan_id)))
    )


async def get_chain_entry(session: AsyncSession, visit_id: uuid.UUID) -> VisitChainEntry | None:
    return await session.get(VisitChainEntry, visit_id)


# A partner's report as it arrived: what its request hash is recomputed from.
REPORTED_FIELDS = ("report_id", "partner", "kind", "loan_id", "observed_at", "details")
_REPORT_COLUMNS: list[Label[Any]] = [
    col(getattr(ThirdPartyReport, name)).label(f"r_{name}") for name in REPORTED_FIELDS
]
_VISIT_COLUMNS: list[Label[Any]] = [
    col(getattr(Visit, name)).label(f"v_{name}")
    for name in (*chain.CHAINED_FIELDS, *chain.VERSION_FIELDS)
]


def _attached_evidence() -> Any:
    """Per chain entry, the (evidence_id, sha256) of what is attached to its visit and what
    it carries over from the version it corrects, as a JSON array: a correlated subquery
    PostgreSQL answers from `ix_evidence_visit` and the primary key."""
    return (
        select(
            func.coalesce(
                func.jsonb_agg(
                    func.jsonb_build_object(
                        "evidence_id", col(Evidence.evidence_id), "sha256", col(Evidence.sha256)
                    )
                ),
                func.jsonb_build_array(),
            )
        )
        .where(
            or_(
                col(Evidence.visit_id) == col(VisitChainEntry.visit_id),
                col(Evidence.evidence_id) == func.any(col(Visit.carried_evidence)),
            )
        )
        .scalar_subquery()
        .label("evidence")
    )


async def stored_chain(
    session: AsyncSession, loan_id: str | None
) -> AsyncIterator[chain.StoredEntry]:
    """Every chain entry (of one loan, or all) with its visit, ordered by loan and seq:
    one streamed query, however long the chain."""
    stmt = (
        select(
            col(VisitChainEntry.loan_id),
            col(VisitChainEntry.seq),
            col(VisitChainEntry.visit_id),
            col(VisitChainEntry.prev_hash),
            col(VisitChainEntry.payload_hash),
            col(VisitChainEntry.entry_hash),
            col(VisitChainEntry.format),
            col(Visit.visit_id).label("found"),
            *_VISIT_COLUMNS,
            col(Visit.region).label("region"),
            _attached_evidence(),
            col(ThirdPartyReport.visit_id).label("reported"),
            *_REPORT_COLUMNS,
        )
        .outerjoin(Visit, col(Visit.visit_id) == col(VisitChainEntry.visit_id))
        .outerjoin(
            ThirdPartyReport, col(ThirdPartyReport.visit_id) == col(VisitChainEntry.visit_id)
        )
        .order_by(col(VisitChainEntry.loan_id), col(VisitChainEntry.seq))
        .execution_options(yield_per=VERIFY_BATCH)
    )
    if loan_id is not None:
        stmt = stmt.where(col(VisitChainEntry.loan_id) == loan_id)
    result = await session.stream(stmt)
    async for row in result.mappings():
        visit = (
            {
                **{
                    name: row[f"v_{name}"]
                    for name in (*chain.CHAINED_FIELDS, *chain.VERSION_FIELDS)
                },
                chain.REGION: row["region"],
                chain.EVIDENCE: row["evidence"],
            }
            if row["found"] is not None
            else None
        )
        report = (
            {name: row[f"r_{name}"] for name in REPORTED_FIELDS}
            if row["reported"] is not None
            else None
        )
        yield chain.StoredEntry(
            loan_id=row["loan_id"],
            seq=row["seq"],
            visit_id=row["visit_id"],
            prev_hash=row["prev_hash"],
            payload_hash=row["payload_hash"],
            entry_hash=row["entry_hash"],
            visit=visit,
            report=report,
            format=row["format"],
        )


async def first_unchained_visit(session: AsyncSession, loan_id: str | None) -> Visit | None:
    """The earliest visit without a chain entry: a row written behind the service's back."""
    chained = select(col(VisitChainEntry.visit_id)).where(
        col(VisitChainEntry.visit_id) == col(Visit.visit_id)
    )
    stmt = select(Visit).where(~chained.exists())
    if loan_id is not None:
        stmt = stmt.where(col(Visit.loan_id) == loan_id)
    stmt = stmt.order_by(col(Visit.created_at), col(Visit.visit_id)).limit(1)
    return (await session.execute(stmt)).scalar_one_or_none()


async def add_report(session: AsyncSession, report: ThirdPartyReport) -> None:
    session.add(report)
    await session.flush()


async def get_report(session: AsyncSession, visit_id: uuid.UUID) -> ThirdPartyReport | None:
    return await session.get(ThirdPartyReport, visit_id)


# --- evidence ----------------------------------------------------------------------------


async def add_evidence(session: AsyncSession, evidence: Evidence) -> Evidence:
    """Insert the upload, or return the row the same uploader already has for the same bytes
    (a retry, or two retries racing: ON CONFLICT, so neither fails)."""
    values = evidence.model_dump()
    inserted = (
        insert(Evidence)
        .values(values)
        .on_conflict_do_nothing(constraint="uq_evidence_uploader_sha256")
        .returning(col(Evidence.evidence_id))
    )
    await session.execute(inserted)
    stmt = select(Evidence).where(
        col(Evidence.uploaded_by) == evidence.uploaded_by,
        col(Evidence.sha256) == evidence.sha256,
    )
    return (await session.execute(stmt)).scalar_one()


async def get_evidence_visible_to(
    session: AsyncSession, evidence_id: uuid.UUID, who: Principal
) -> Evidence | None:
    stmt = select(Evidence).where(col(Evidence.evidence_id) == evidence_id, visible_evidence(who))
    return (await session.execute(stmt)).scalar_one_or_none()


async def lock_evidence(
    session: AsyncSession, evidence_ids: list[uuid.UUID]
) -> dict[uuid.UUID, Evidence]:
    """The listed evidence rows that exist, locked until the transaction ends: two visits
    referencing the same photo at once are decided one after the other."""
    if not evidence_ids:
        return {}
    stmt = (
        select(Evidence)
        .where(col(Evidence.evidence_id).in_(evidence_ids))
        .order_by(col(Evidence.evidence_id))  # one lock order: no deadlock between two
        .with_for_update()
    )
    rows = (await session.execute(stmt)).scalars().all()
    return {row.evidence_id: row for row in rows}


async def attach_evidence(
    session: AsyncSession, visit_id: uuid.UUID, evidence_ids: list[uuid.UUID]
) -> None:
    """Point the (already locked and checked) evidence at the visit, one statement."""
    if evidence_ids:
        await session.execute(
            update(Evidence)
            .where(col(Evidence.evidence_id).in_(evidence_ids))
            .values(visit_id=visit_id)
            .execution_options(synchronize_session=False)
        )


async def evidence_of(
    session: AsyncSession, visits: list[Visit]
) -> dict[uuid.UUID, list[Evidence]]:
    """The evidence each of the visits (a page of them) stands on, attached to it or
    carried over from the version it corrects, in one query."""
    found: dict[uuid.UUID, list[Evidence]] = {visit.visit_id: [] for visit in visits}
    if not visits:
        return found
    carried_by: dict[uuid.UUID, list[uuid.UUID]] = {}
    for visit in visits:
        for evidence_id in visit.carried_evidence or ():
            carried_by.setdefault(evidence_id, []).append(visit.visit_id)
    stmt = (
        select(Evidence)
        .where(
            or_(
                col(Evidence.visit_id).in_(list(found)),
                col(Evidence.evidence_id).in_(list(carried_by)),
            )
        )
        .order_by(col(Evidence.evidence_id))
    )
    for row in (await session.execute(stmt)).scalars():
        if row.visit_id in found:
            found[row.visit_id].append(row)
        for visit_id in carried_by.get(row.evidence_id, ()):
            found[visit_id].append(row)
    for rows in found.values():
        rows.sort(key=lambda row: row.evidence_id)
    return found


# --- drafts and retention ----------------------------------------------------------------


async def get_draft(session: AsyncSession, agent_id: str, visit_id: uuid.UUID) -> VisitDraft | None:
    """The agent's draft; another's looks absent."""
    stmt = select(VisitDraft).where(
        col(VisitDraft.visit_id) == visit_id, col(VisitDraft.agent_id) == agent_id
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def save_draft(session: AsyncSession, draft: VisitDraft) -> VisitDraft | None:
    """Insert the draft, or replace the body of the agent's own draft under that id; None
    when the id is another agent's draft (nothing written). One statement."""
    stmt = (
        insert(VisitDraft)
        .values(draft.model_dump())
        .on_conflict_do_update(
            index_elements=[col(VisitDraft.visit_id)],
            set_={"body": draft.body, "loan_id": draft.loan_id, "updated_at": draft.updated_at},
            where=col(VisitDraft.agent_id) == draft.agent_id,
        )
        .returning(VisitDraft)
    )
    row = (await session.execute(stmt)).one_or_none()
    return VisitDraft.model_validate(row[0]) if row is not None else None


async def delete_draft(session: AsyncSession, agent_id: str, visit_id: uuid.UUID) -> bool:
    result = await session.execute(
        delete(VisitDraft).where(
            col(VisitDraft.visit_id) == visit_id, col(VisitDraft.agent_id) == agent_id
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def list_drafts(
    session: AsyncSession, agent_id: str, *, cursor: str | None, limit: int
) -> Page[VisitDraft]:
    stmt = select(VisitDraft).where(col(VisitDraft.agent_id) == agent_id)
    return await keyset_page(
        session,
        stmt,
        key=(col(VisitDraft.created_at), col(VisitDraft.visit_id)),
        cursor=cursor,
        limit=limit,
        to_item=lambda draft: draft,
    )


async def purge_drafts(session: AsyncSession, untouched_since: datetime, batch: int) -> int:
    """Delete up to `batch` drafts nobody has changed since then; how many."""
    stale = (
        select(col(VisitDraft.visit_id))
        .where(col(VisitDraft.updated_at) < untouched_since)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(delete(VisitDraft).where(col(VisitDraft.visit_id).in_(stale)))
    return int(getattr(result, "rowcount", 0))


async def expire_idempotency_keys(
    session: AsyncSession, recorded_before: datetime, batch: int
) -> int:
    """Clear the keys of up to `batch` captures recorded before then; how many. Partners'
    report ids are their reports' identity (one visit per report, ever) and are kept."""
    expired = (
        select(col(Visit.visit_id))
        .where(
            col(Visit.created_at) < recorded_before,
            col(Visit.idempotency_key).is_not(None),
            col(Visit.method) != "third_party",
        )
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        update(Visit)
        .where(col(Visit.visit_id).in_(expired))
        .values(idempotency_key=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


# --- unattached evidence -----------------------------------------------------------------


async def purge_unattached_evidence(
    session: AsyncSession, uploaded_before: datetime, batch: int
) -> list[str]:
    """Delete up to `batch` uploads attached to no visit since before then, except those
    a draft of their uploader still lists (it may yet be submitted with them); the SHA-256
    of each deleted row. A row a capture has locked to attach is skipped, and one deleted
    here is absent to a capture that then locks it (a 422 naming it)."""
    listed_by_a_draft = (
        select(col(VisitDraft.visit_id))
        .where(
            col(VisitDraft.agent_id) == col(Evidence.uploaded_by),
            col(VisitDraft.body)["evidence"].has_key(cast(col(Evidence.evidence_id), Text)),
        )
        .exists()
    )
    stale = (
        select(col(Evidence.evidence_id))
        .where(
            col(Evidence.visit_id).is_(None),
            col(Evidence.created_at) < uploaded_before,
            ~listed_by_a_draft,
        )
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        delete(Evidence).where(col(Evidence.evidence_id).in_(stale)).returning(col(Evidence.sha256))
    )
    return list(result.scalars())


async def lock_objects(session: AsyncSession, hashes: list[str], *, shared: bool) -> None:
    """Lock the evidence objects named by `hashes` until the transaction ends (one order:
    no deadlock between two callers)."""
    lock = func.pg_advisory_xact_lock_shared if shared else func.pg_advisory_xact_lock
    for sha256 in sorted(set(hashes)):
        await session.execute(select(lock(OBJECT_LOCK_CLASS, func.hashtext(sha256))))


async def referenced_objects(session: AsyncSession, hashes: list[str]) -> set[str]:
    """Which of the objects some evidence row still names."""
    if not hashes:
        return set()
    stmt = select(col(Evidence.sha256)).where(col(Evidence.sha256).in_(hashes)).distinct()
    return set((await session.execute(stmt)).scalars())
