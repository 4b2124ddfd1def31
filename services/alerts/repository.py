"""All alerts SQL, and who may read what.

The desk reads alerts whole: the roles in `READERS` see every alert, and `visible_alerts`
is where a narrower rule (a supervisor's region, say) would go, applied by every read.

| route                                | ops, supervisor, admin          | agent, integration |
|--------------------------------------|---------------------------------|--------------------|
| `GET /v1/alerts`, `/v1/alerts/{id}`  | every alert (by the filters)    | none (403)         |
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast

from sqlalchemy import ColumnElement, TextClause, delete, exists, func, select, text, true
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.alerts.models import (
    Alert,
    AlertHistory,
    LegalCase,
    LoanFacts,
    ParkedEvent,
    PlanStatus,
    RepaymentMemory,
    RepaymentPlan,
    VisitMemory,
    inbox,
)
from services.alerts.rules import KnownLoan
from services.alerts.triage import ACTIVE, AlertState
from shared.auth import Principal, Role
from shared.pagination import Page, keyset_page
from shared.vocabulary import AgreedUsage

T = TypeVar("T")

# Supervisors follow alerts; the operations desk (and admins) also work them.
READERS: tuple[Role, ...] = ("ops", "supervisor", "admin")
# Oldest first: the triage queue is worked in arrival order.
ALERT_ORDER = (col(Alert.created_at), col(Alert.alert_id))


def visible_alerts(who: Principal) -> ColumnElement[bool]:
    """The alerts `who` may read: every reader all of them."""
    del who  # every reader sees the whole desk today
    return true()


# --- alerts -------------------------------------------------------------------------------


# Rows travel as one array per column (`unnest`): a statement is the same text for any
# number of alerts (compiled once, cached by the driver) and takes one parameter a column
# whatever the batch. JSON travels as text and is cast in the statement.
_ALERT_COLUMNS = (
    ("alert_id", "uuid"),
    ("loan_id", "varchar"),
    ("family", "varchar"),
    ("rule", "varchar"),
    ("category", "varchar"),
    ("severity", "varchar"),
    ("status", "varchar"),
    ("reason", "text"),
    ("recommended_action", "varchar"),
    ("facts", "jsonb"),
    ("rule_version", "int"),
    ("source_event_id", "uuid"),
    ("created_at", "timestamptz"),
    ("occurrences", "int"),
    ("last_seen_at", "timestamptz"),
    ("last_raised_at", "timestamptz"),
    ("severity_since", "timestamptz"),
    ("resolved_at", "timestamptz"),
    ("resolved_by", "varchar"),
    ("resolution_action", "varchar"),
    ("resolution_note", "varchar"),
)
# What a batch may change on an alert it found active.
_CHANGED_COLUMNS = tuple(
    (name, kind)
    for name, kind in _ALERT_COLUMNS
    if name not in ("loan_id", "family", "category", "source_event_id", "created_at")
)


def _unnest(columns: Sequence[tuple[str, str]], *, ordinality: bool = False) -> str:
    """The arrays as rows `u`; with `ordinality` each row's place is `u.n`."""
    arrays = ", ".join(
        f"CAST(:{name} AS {'text' if kind == 'jsonb' else kind}[])" for name, kind in columns
    )
    names = [name for name, _ in columns] + (["n"] if ordinality else [])
    with_ordinality = " WITH ORDINALITY" if ordinality else ""
    return f"unnest({arrays}){with_ordinality} AS u({', '.join(names)})"


def _value(name: str, kind: str) -> str:
    return f"u.{name}::jsonb" if kind == "jsonb" else f"u.{name}"


_INSERT_ALERTS = text(
    "INSERT INTO alerts.alerts ("
    + ", ".join(name for name, _ in _ALERT_COLUMNS)
    + ") SELECT "
    + ", ".join(_value(name, kind) for name, kind in _ALERT_COLUMNS)
    + " FROM "
    + _unnest(_ALERT_COLUMNS)
    + " ON CONFLICT ON CONSTRAINT uq_alerts_source_event_rule DO NOTHING RETURNING alert_id"
)
_UPDATE_ALERTS = text(
    "UPDATE alerts.alerts AS a SET "
    + ", ".join(
        f"{name} = {_value(name, kind)}" for name, kind in _CHANGED_COLUMNS if name != "alert_id"
    )
    + ", version = a.version + 1 FROM "
    + _unnest(_CHANGED_COLUMNS)
    + " WHERE a.alert_id = u.alert_id"
)


def _arrays(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]
) -> dict[str, list[Any]]:
    # Column by column, each kind's conversion chosen once: a batch has thousands of cells.
    arrays: dict[str, list[Any]] = {}
    for name, kind in columns:
        values = [row[name] for row in rows]
        if kind == "jsonb":
            values = [None if v is None else _json(v) for v in values]
        elif kind == "varchar":
            # Enums travel as their values.
            values = [None if v is None else str(v) for v in values]
        arrays[name] = values
    return arrays


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


async def add_alerts(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> set[uuid.UUID]:
    """Insert alerts with one statement; returns the ids of those inserted. An alert whose
    source event already raised its rule (a replay that bypassed the inbox) is skipped."""
    if not rows:
        return set()
    result = await session.execute(_INSERT_ALERTS, _arrays(rows, _ALERT_COLUMNS))
    return set(result.scalars())


_COUNTED_COLUMNS = (("alert_id", "uuid"), ("occurrences", "int"), ("last_seen_at", "timestamptz"))
_COUNT_ALERTS = text(
    "UPDATE alerts.alerts AS a SET occurrences = u.occurrences,"
    " last_seen_at = u.last_seen_at, version = a.version + 1 FROM "
    + _unnest(_COUNTED_COLUMNS)
    + " WHERE a.alert_id = u.alert_id"
)


async def count_alerts(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write the count and last sighting of active alerts a batch only saw again, with one
    statement of three columns (not every column of the alert: most updates of a month
    end are these); each one's version moves on."""
    if rows:
        await session.execute(_COUNT_ALERTS, _arrays(rows, _COUNTED_COLUMNS))


async def update_alerts(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write what a batch changed on active alerts (escalated, counted, cured), with one
    statement; each changed alert's version moves on (its ETag changes)."""
    if rows:
        await session.execute(_UPDATE_ALERTS, _arrays(rows, _CHANGED_COLUMNS))


# An alert as a batch reads it: the columns of triage.AlertState, in its fields' order.
AlertRow = tuple[Any, ...]
ALERT_ROW_COLUMNS = tuple(
    f.name for f in fields(AlertState) if f.name not in ("new", "changed", "rewritten")
)

# The loans joined as rows, not `loan_id = ANY(array)`: PostgreSQL read every active alert
# and compared it with each of the batch's thousand loans (8 ms a batch with 2,000 active
# alerts, growing with the portfolio); a join looks each loan up (3 ms, EXPLAIN ANALYZE).
_ACTIVE_ALERTS = text(
    "SELECT "
    + ", ".join(f"a.{name}" for name in ALERT_ROW_COLUMNS)
    + " FROM unnest(CAST(:loan_ids AS varchar[])) AS l(loan_id)"
    " JOIN alerts.alerts AS a ON a.loan_id = l.loan_id"
    " WHERE a.status = ANY(CAST(:active AS varchar[])) ORDER BY a.alert_id FOR UPDATE OF a"
)


async def active_alerts(session: AsyncSession, loan_ids: Collection[str]) -> list[AlertRow]:
    """The active alerts of these loans, locked for the batch (the desk may be working one),
    as plain rows: a batch reads hundreds, and building ORM entities of them (and an IN
    list of a thousand loan ids) was a tenth of the worker's CPU."""
    if not loan_ids:
        return []
    params = {"loan_ids": sorted(loan_ids), "active": [str(s) for s in ACTIVE]}
    return cast(list[AlertRow], (await session.execute(_ACTIVE_ALERTS, params)).all())


_HISTORY_COLUMNS = (
    ("alert_id", "uuid"),
    ("at", "timestamptz"),
    ("who", "varchar"),
    ("action", "varchar"),
    ("from_status", "varchar"),
    ("to_status", "varchar"),
    ("severity", "varchar"),
    ("note", "text"),
    ("source_event_id", "uuid"),
    ("detail", "jsonb"),
)
# In the given order (WITH ORDINALITY): the history's ids follow the order of the lines.
_ADD_HISTORY = text(
    "INSERT INTO alerts.alert_history ("
    + ", ".join(name for name, _ in _HISTORY_COLUMNS)
    + ") SELECT "
    + ", ".join(_value(name, kind) for name, kind in _HISTORY_COLUMNS)
    + " FROM "
    + _unnest(_HISTORY_COLUMNS, ordinality=True)
    + " ORDER BY u.n"
)


async def add_history(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append history lines (in the given order) with one statement whatever their number:
    one array per column, so the statement's text is the same for every batch."""
    if rows:
        await session.execute(_ADD_HISTORY, _arrays(rows, _HISTORY_COLUMNS))


async def history_of(session: AsyncSession, alert_id: uuid.UUID) -> list[AlertHistory]:
    stmt = (
        select(AlertHistory)
        .where(col(AlertHistory.alert_id) == alert_id)
        .order_by(col(AlertHistory.id))
    )
    return list((await session.execute(stmt)).scalars())


_SUPERVISOR_QUEUE = text(
    "UPDATE alerts.alerts AS a SET supervisor_queue_at = :now, version = a.version + 1 "
    "FROM unnest(CAST(:severities AS varchar[]), CAST(:cutoffs AS timestamptz[])) "
    "AS d(severity, cutoff) "
    "WHERE a.status = 'open' AND a.supervisor_queue_at IS NULL "
    "AND a.severity = d.severity AND a.severity_since <= d.cutoff "
    "RETURNING a.alert_id, a.severity, a.severity_since"
)


async def queue_for_supervisor(
    session: AsyncSession, cutoffs: Mapping[str, datetime], now: datetime
) -> list[tuple[uuid.UUID, str, datetime]]:
    """Flag every open alert that has had its severity since before its severity's cutoff
    (one statement); returns (alert_id, severity, severity_since) of those flagged."""
    if not cutoffs:
        return []
    params = {"now": now, "severities": list(cutoffs), "cutoffs": list(cutoffs.values())}
    result = await session.execute(_SUPERVISOR_QUEUE, params)
    return [(row[0], row[1], row[2]) for row in result.all()]


# --- resolutions as records --------------------------------------------------------------

# What a loan owes now by its postings: the latest posting of each installment counts (a
# late payment replaces the miss); a reversed payment owes the whole installment again.
_ARREARS = text(
    "SELECT coalesce(sum(CASE status "
    "WHEN 'paid' THEN 0 "
    "WHEN 'reversed' THEN amount_due "
    "ELSE greatest(amount_due - amount_paid, 0) END), 0) "
    "FROM (SELECT DISTINCT ON (installment_no) status, amount_due, amount_paid "
    "FROM alerts.repayment_memory WHERE loan_id = :loan_id "
    "ORDER BY installment_no, seq DESC) AS latest"
)


async def arrears_of(session: AsyncSession, loan_id: str) -> Decimal:
    value = (await session.execute(_ARREARS, {"loan_id": loan_id})).scalar_one()
    return Decimal(value)


async def proposed_plan_of(session: AsyncSession, alert_id: uuid.UUID) -> RepaymentPlan | None:
    stmt = select(RepaymentPlan).where(
        col(RepaymentPlan.alert_id) == alert_id,
        col(RepaymentPlan.status) == str(PlanStatus.PROPOSED),
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_plan(
    session: AsyncSession, plan_id: uuid.UUID, *, for_update: bool = False
) -> RepaymentPlan | None:
    stmt = select(RepaymentPlan).where(col(RepaymentPlan.plan_id) == plan_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_case(
    session: AsyncSession, case_id: uuid.UUID, *, for_update: bool = False
) -> LegalCase | None:
    stmt = select(LegalCase).where(col(LegalCase.case_id) == case_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def case_of(session: AsyncSession, alert_id: uuid.UUID) -> LegalCase | None:
    stmt = select(LegalCase).where(col(LegalCase.alert_id) == alert_id)
    return (await session.execute(stmt)).scalar_one_or_none()


# --- the loans' memory --------------------------------------------------------------------


# What each memory keeps of an event, with the PostgreSQL types its arrays travel as.
_MEMORY_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "repayment_memory": (
        ("event_id", "uuid"),
        ("loan_id", "varchar"),
        ("installment_no", "integer"),
        ("status", "varchar"),
        ("days_past_due", "integer"),
        ("amount_due", "numeric"),
        ("amount_paid", "numeric"),
        ("occurred_at", "timestamptz"),
    ),
    "visit_memory": (
        ("event_id", "uuid"),
        ("loan_id", "varchar"),
        ("occasion", "varchar"),
        ("outcome", "varchar"),
        ("ended_at", "timestamptz"),
    ),
}


def _remember_statement(table: str) -> TextClause:
    columns = _MEMORY_COLUMNS[table]
    # WITH ORDINALITY keeps the given order, so `seq` follows the batch's order.
    return text(
        f"INSERT INTO alerts.{table} ({', '.join(name for name, _ in columns)})"
        f" SELECT {', '.join(name for name, _ in columns)} FROM unnest("
        + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in columns)
        + f") WITH ORDINALITY AS r({', '.join(name for name, _ in columns)}, n) ORDER BY n"
        " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
    )


_REMEMBER = {table: _remember_statement(table) for table in _MEMORY_COLUMNS}


async def remember(
    session: AsyncSession,
    table: type[RepaymentMemory] | type[VisitMemory],
    columns: Mapping[str, Sequence[Any]],
) -> set[uuid.UUID]:
    """Remember events (in the given order), given as one array per column of the memory
    (the batch's events are laid out column by column once, not as a row each), with one
    statement whatever their number; returns the ids of those not remembered before: only
    they are applied, so an event applied twice changes nothing."""
    if not columns["event_id"]:
        return set()
    name = str(table.__tablename__)
    arrays = {column: columns[column] for column, _ in _MEMORY_COLUMNS[name]}
    result = await session.execute(_REMEMBER[name], arrays)
    return set(result.scalars())


# A remembered posting as the rules' story reads it: event_id, seq, loan_id,
# installment_no, status, days_past_due, amount_due, amount_paid.
StoryPosting = tuple[uuid.UUID, int, str, int, str, int, Decimal, Decimal]

_POSTINGS_OF = text(
    "SELECT m.event_id, m.seq, m.loan_id, m.installment_no, m.status, m.days_past_due,"
    " m.amount_due, m.amount_paid"
    " FROM unnest(CAST(:loan_ids AS varchar[]), CAST(:keep AS integer[])) AS l(loan_id, keep)"
    " CROSS JOIN LATERAL (SELECT * FROM alerts.repayment_memory AS r"
    "      WHERE r.loan_id = l.loan_id ORDER BY r.seq DESC LIMIT l.keep) AS m"
    " ORDER BY m.seq"
)


async def postings_of(
    session: AsyncSession, batch_postings: Mapping[str, int], lookback: int
) -> list[StoryPosting]:
    """The latest remembered postings of these loans (loan id -> how many postings of the
    batch it has: they are remembered already and are read too) and `lookback` more,
    oldest first, as plain tuples: hundreds a batch, too many to build as ORM objects (or
    to read by attribute)."""
    if not batch_postings:
        return []
    loan_ids = sorted(batch_postings)
    keep = [batch_postings[loan_id] + lookback for loan_id in loan_ids]
    result = await session.execute(_POSTINGS_OF, {"loan_ids": loan_ids, "keep": keep})
    return cast(list[StoryPosting], result.all())


async def visits_of(
    session: AsyncSession, loan_ids: Collection[str], since: datetime
) -> list[VisitMemory]:
    """The remembered visits of these loans that ended after `since`, in applied order."""
    if not loan_ids:
        return []
    stmt = (
        select(VisitMemory)
        .where(
            col(VisitMemory.loan_id).in_(sorted(loan_ids)),
            col(VisitMemory.ended_at) > since,
        )
        .order_by(col(VisitMemory.seq))
    )
    return list((await session.execute(stmt)).scalars())


# PostgreSQL takes at most 32,767 parameters a statement; the multi-row inserts of history
# and memory have at most 11 columns.
ROWS_PER_STATEMENT = 2_000


def _chunks(rows: Sequence[T], size: int) -> list[Sequence[T]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


async def get_alert(
    session: AsyncSession, alert_id: uuid.UUID, *, for_update: bool = False
) -> Alert | None:
    stmt = select(Alert).where(col(Alert.alert_id) == alert_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_alert_visible_to(
    session: AsyncSession, alert_id: uuid.UUID, who: Principal
) -> Alert | None:
    """The alert, if `who` may read it (`visible_alerts`); None as if it did not exist."""
    stmt = select(Alert).where(col(Alert.alert_id) == alert_id, visible_alerts(who))
    return (await session.execute(stmt)).scalar_one_or_none()


@dataclass(frozen=True)
class AlertFilter:
    """What the desk narrows the alerts to; None is no narrowing."""

    loan_id: str | None = None
    status: str | None = None
    severity: str | None = None
    rule: str | None = None
    category: str | None = None
    region: str | None = None
    assignee: str | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None
    supervisor_queue: bool | None = None

    def where(self, who: Principal) -> list[ColumnElement[bool]]:
        clauses = [visible_alerts(who)]
        for column, value in (
            (Alert.loan_id, self.loan_id),
            (Alert.status, self.status),
            (Alert.severity, self.severity),
            (Alert.rule, self.rule),
            (Alert.category, self.category),
            (Alert.assignee, self.assignee),
        ):
            if value is not None:
                clauses.append(col(column) == value)
        if self.region is not None:
            # The region is the loan's, from the projection of its facts.
            in_region = select(col(LoanFacts.loan_id)).where(col(LoanFacts.region) == self.region)
            clauses.append(col(Alert.loan_id).in_(in_region))
        if self.created_from is not None:
            clauses.append(col(Alert.created_at) >= self.created_from)
        if self.created_before is not None:
            clauses.append(col(Alert.created_at) < self.created_before)
        if self.supervisor_queue is not None:
            queued = col(Alert.supervisor_queue_at).is_not(None)
            clauses.append(queued if self.supervisor_queue else ~queued)
        return clauses


async def list_alerts(
    session: AsyncSession,
    who: Principal,
    filters: AlertFilter,
    *,
    cursor: str | None,
    limit: int,
    to_item: Callable[[Alert], T],
) -> Page[T]:
    """A page of the alerts `who` may read, by filters, oldest first."""
    stmt = select(Alert).where(*filters.where(who))
    return await keyset_page(
        session, stmt, key=ALERT_ORDER, cursor=cursor, limit=limit, to_item=to_item
    )


async def summary(
    session: AsyncSession, who: Principal, filters: AlertFilter
) -> list[tuple[str, str, str, int]]:
    """(rule, severity, status, count) of the alerts `who` may read, by filters, in one
    grouped query."""
    stmt = (
        select(col(Alert.rule), col(Alert.severity), col(Alert.status), func.count())
        .where(*filters.where(who))
        .group_by(col(Alert.rule), col(Alert.severity), col(Alert.status))
    )
    return [(r, s, st, int(n)) for r, s, st, n in (await session.execute(stmt)).all()]


# --- the projection of loan facts ---------------------------------------------------------


async def project_loan_facts(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Upsert the facts of loans, one row per loan, in one statement: a row replaces the
    stored facts only if it is newer, so an event that arrives late changes nothing."""
    if not rows:
        return
    stmt = insert(LoanFacts).values(list(rows))
    facts = LoanFacts.__table__.c  # type: ignore[attr-defined]
    replaced = {
        name: stmt.excluded[name] for name in rows[0] if name not in ("loan_id", "updated_at")
    }
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[col(LoanFacts.loan_id)],
            set_={**replaced, "updated_at": func.now()},
            where=stmt.excluded.facts_at > facts.facts_at,
        )
    )


async def known_loans(session: AsyncSession, loan_ids: Collection[str]) -> dict[str, KnownLoan]:
    """What the rules know of each of these loans that has facts, in one query."""
    if not loan_ids:
        return {}
    # One array parameter: an IN list of a batch's ids would be rendered into the statement
    # anew for every batch.
    rows = await session.execute(_KNOWN_LOANS, {"loan_ids": sorted(loan_ids)})
    return {loan_id: _KNOWN[usage] for loan_id, usage in rows.all()}


_KNOWN_LOANS = text(
    "SELECT loan_id, agreed_usage FROM alerts.loan_facts"
    " WHERE loan_id = ANY(CAST(:loan_ids AS varchar[]))"
)
# What is known of a loan is one of a few values (immutable): shared, not built per loan.
_KNOWN = {str(usage): KnownLoan(usage) for usage in AgreedUsage}


# --- events waiting for their loan's facts ------------------------------------------------


async def park(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Park events (in the given order) until their loans' facts arrive, in one statement."""
    if not rows:
        return
    await session.execute(
        insert(ParkedEvent).values(list(rows)).on_conflict_do_nothing(index_elements=["event_id"])
    )


async def unpark_loans(session: AsyncSession, loan_ids: Collection[str]) -> list[ParkedEvent]:
    """Take the parked events of these loans out of the park, in park order."""
    if not loan_ids:
        return []
    stmt = (
        delete(ParkedEvent)
        .where(col(ParkedEvent.loan_id).in_(sorted(loan_ids)))
        .returning(ParkedEvent)
    )
    return sorted((await session.execute(stmt)).scalars(), key=_park_order)


async def unpark_known(session: AsyncSession, limit: int) -> list[ParkedEvent]:
    """Take out up to `limit` parked events whose loan has facts by now (parked while the
    facts were being projected by another transaction), in park order."""
    waiting = (
        select(col(ParkedEvent.id))
        .where(exists().where(col(LoanFacts.loan_id) == col(ParkedEvent.loan_id)))
        .order_by(col(ParkedEvent.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = delete(ParkedEvent).where(col(ParkedEvent.id).in_(waiting)).returning(ParkedEvent)
    return sorted((await session.execute(stmt)).scalars(), key=_park_order)


async def expired_parked(
    session: AsyncSession, older_than: datetime, limit: int
) -> list[ParkedEvent]:
    """Up to `limit` events parked before `older_than` whose loan is still unknown, in park
    order, locked until the transaction ends (other sweepers skip them)."""
    stmt = (
        select(ParkedEvent)
        .where(
            col(ParkedEvent.parked_at) < older_than,
            ~exists().where(col(LoanFacts.loan_id) == col(ParkedEvent.loan_id)),
        )
        .order_by(col(ParkedEvent.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(stmt)).scalars())


async def drop_dead_lettered(session: AsyncSession, parked: Sequence[ParkedEvent]) -> None:
    """Take dead-lettered events out of the park and out of the inbox (they were claimed
    when parked), so a replay from the dead-letter topic is applied, not ignored."""
    if not parked:
        return
    ids = sorted(row.id for row in parked if row.id is not None)
    await session.execute(delete(ParkedEvent).where(col(ParkedEvent.id).in_(ids)))
    event_ids = sorted(row.event_id for row in parked)
    await session.execute(delete(inbox).where(inbox.c.event_id.in_(event_ids)))


async def parked_count(session: AsyncSession) -> tuple[int, timedelta | None]:
    """How many events are parked, and how long the oldest has waited."""
    row = (
        await session.execute(
            select(func.count(), func.now() - func.min(col(ParkedEvent.parked_at)))
        )
    ).one()
    count, waited = row
    return int(count), waited if isinstance(waited, timedelta) else None


def _park_order(event: ParkedEvent) -> int:
    return event.id or 0
