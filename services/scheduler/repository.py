"""All scheduler SQL, and who may read what.

Every role reads here (`READERS`), each narrowed in SQL by `visible_loans` and
`visible_tasks`, so a row the reader may not see is absent (a 404, or missing from a
list), never fetched and then refused:

| route                                     | agent                       | everyone else |
|-------------------------------------------|-----------------------------|---------------|
| `GET /v1/loans/{id}`                      | loans it has had a task on  | any loan      |
| `GET /v1/tasks`, `/v1/loans/{id}/tasks`   | its own tasks (an `agent_id`| any task, by  |
|                                           | it names is not a filter)   | the filters   |
| `GET /v1/tasks/{id}`                      | its own task                | any task      |
"""

from __future__ import annotations

import json
import typing
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import ColumnElement, DateTime, TextClause, cast, exists, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.scheduler.models import Agent, Loan, VisitTask
from services.scheduler.policy import (
    SEARCH_DAYS,
    Assignment,
    RosterAgent,
    TaskPlan,
    WaitingTask,
)
from services.scheduler.schemas import TaskQuery
from shared.auth import Principal, Role
from shared.events import RepaymentPlanApproved
from shared.pagination import Page, SortKey, keyset_page

T = TypeVar("T")

# Every role reads the scheduler, each narrowed by the rules below.
READERS: tuple[Role, ...] = ("agent", "supervisor", "ops", "integration", "admin")
TASK_ORDER = (col(VisitTask.created_at), col(VisitTask.task_id))
# Soonest due first: the due day as a timestamp, so the list's cursor is the usual one.
DUE_ORDER = (
    cast(col(VisitTask.due_on), DateTime(timezone=True)).label("due_at"),
    col(VisitTask.task_id),
)


def visible_tasks(who: Principal) -> ColumnElement[bool]:
    """The tasks `who` may read: an agent its own, every other reader all."""
    return col(VisitTask.agent_id) == who.sub if who.is_agent else true()


def visible_loans(who: Principal) -> ColumnElement[bool]:
    """The loans `who` may read: an agent those it has been given a task on (open or not),
    every other reader all. One statement either way, so an agent cannot tell by the time
    of the answer whether a loan it may not see exists."""
    if not who.is_agent:
        return true()
    return exists().where(
        col(VisitTask.loan_id) == col(Loan.loan_id), col(VisitTask.agent_id) == who.sub
    )


async def get_loan(session: AsyncSession, loan_id: str, *, for_update: bool = False) -> Loan | None:
    stmt = select(Loan).where(col(Loan.loan_id) == loan_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_loan_visible_to(session: AsyncSession, loan_id: str, who: Principal) -> Loan | None:
    """The loan, if `who` may read it (`visible_loans`); None as if it did not exist."""
    stmt = select(Loan).where(col(Loan.loan_id) == loan_id, visible_loans(who))
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_agent(session: AsyncSession, agent_id: str) -> Agent | None:
    return await session.get(Agent, agent_id)


async def get_task(
    session: AsyncSession, task_id: uuid.UUID, *, for_update: bool = False
) -> VisitTask | None:
    stmt = select(VisitTask).where(col(VisitTask.task_id) == task_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_task_visible_to(
    session: AsyncSession, task_id: uuid.UUID, who: Principal
) -> VisitTask | None:
    """The task, if `who` may read it (`visible_tasks`); None as if it did not exist."""
    stmt = select(VisitTask).where(col(VisitTask.task_id) == task_id, visible_tasks(who))
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_task_and_region(
    session: AsyncSession, task_id: uuid.UUID, *, for_update: bool = False
) -> tuple[VisitTask, str] | None:
    """The task and its loan's region, in one statement (the task row locked if asked)."""
    stmt = (
        select(VisitTask, col(Loan.region))
        .join(Loan, col(Loan.loan_id) == col(VisitTask.loan_id))
        .where(col(VisitTask.task_id) == task_id)
    )
    if for_update:
        stmt = stmt.with_for_update(of=VisitTask)
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else (row[0], row[1])


# --- planning -----------------------------------------------------------------------------


class LoanFacts(NamedTuple):
    """What planning needs of a loan: its standing and the inputs of its risk tier. (A named
    tuple: a batch builds one per loan, and a frozen dataclass cost four times as much.)"""

    loan_id: str
    credit_grade: str
    days_past_due: int
    principal: Decimal
    valuation: Decimal
    term_months: int
    disbursed_on: date
    tier_shift: int
    on_time_streak: int
    last_visit_clean: bool | None


async def lock_loans(session: AsyncSession, loan_ids: Collection[str]) -> dict[str, LoanFacts]:
    """The registered loans among `loan_ids`, locked in loan_id order: two batches that
    share loans (a topic's partitions run side by side) wait for each other instead of
    deadlocking."""
    rows = await session.execute(
        text(
            "SELECT loan_id, credit_grade, days_past_due, principal, valuation, term_months,"
            " disbursed_on, tier_shift, on_time_streak, last_visit_clean FROM scheduler.loans"
            " WHERE loan_id = ANY(CAST(:ids AS varchar[])) ORDER BY loan_id FOR UPDATE"
        ),
        {"ids": sorted(set(loan_ids))},
    )
    return {r.loan_id: LoanFacts(*r) for r in rows}


@dataclass(frozen=True)
class Completion:
    """A visit that did the open task `task_id` of `loan_id`; a partner's report (method
    `third_party`, no task named) does the loan's open third-party check."""

    task_id: uuid.UUID | None
    loan_id: str
    visit_id: uuid.UUID
    completed_at: datetime
    method: str = "phone"


async def complete_tasks(session: AsyncSession, completions: Sequence[Completion]) -> None:
    """Complete the visited tasks: only a task of the visit's loan that is still open."""
    if not completions:
        return
    await session.execute(
        text(
            "UPDATE scheduler.visit_tasks AS t"
            " SET status = 'completed', visit_id = v.visit_id, completed_at = v.completed_at"
            " FROM unnest(CAST(:task_ids AS uuid[]), CAST(:loan_ids AS varchar[]),"
            "             CAST(:visit_ids AS uuid[]), CAST(:completed AS timestamptz[]),"
            "             CAST(:methods AS varchar[]))"
            "      AS v(task_id, loan_id, visit_id, completed_at, method)"
            " WHERE t.loan_id = v.loan_id AND t.status = 'open'"
            "   AND (t.task_id = v.task_id"
            "        OR (v.task_id IS NULL AND v.method = 'third_party'"
            "            AND t.method = 'third_party'))"
        ),
        {
            "task_ids": [c.task_id for c in completions],
            "loan_ids": [c.loan_id for c in completions],
            "visit_ids": [c.visit_id for c in completions],
            "completed": [c.completed_at for c in completions],
            "methods": [c.method for c in completions],
        },
    )


# One open task per (loan, method) (uq_visit_tasks_open_loan_method): a plan either creates
# it, brings it forward (its reason becomes the plan's), or leaves it and is recorded in the
# task's `also` (policy.merge_plans does the same within a batch). The agent is kept:
# assignment is the dispatcher's (dispatch.py). Rows go in (loan, method) order, the order
# their locks are taken in.
_UPSERT_TASKS = text(
    """
    INSERT INTO scheduler.visit_tasks AS t
        (task_id, loan_id, region, method, due_on, status, reason, source_event_id, created_at)
    SELECT gen_random_uuid(), p.loan_id, l.region, p.method, p.due_on, 'open',
           CAST(p.reason AS jsonb), p.source_event_id, now()
    FROM unnest(CAST(:loan_ids AS varchar[]), CAST(:methods AS varchar[]),
                CAST(:due_ons AS date[]), CAST(:reasons AS text[]),
                CAST(:source_event_ids AS uuid[]))
         AS p(loan_id, method, due_on, reason, source_event_id)
    JOIN scheduler.loans AS l USING (loan_id)
    ORDER BY p.loan_id, p.method
    ON CONFLICT (loan_id, method) WHERE status = 'open' DO UPDATE SET
        due_on = LEAST(t.due_on, excluded.due_on),
        reason = CASE WHEN excluded.due_on < t.due_on THEN excluded.reason
                      ELSE t.reason || jsonb_build_object('also',
                               COALESCE(t.reason -> 'also', '[]'::jsonb)
                               || jsonb_build_array(excluded.reason - 'also')
                               || COALESCE(excluded.reason -> 'also', '[]'::jsonb))
                 END,
        source_event_id = CASE WHEN excluded.due_on < t.due_on THEN excluded.source_event_id
                               ELSE t.source_event_id END
    RETURNING agent_id IS NULL AS awaiting_dispatch
    """
)


async def upsert_tasks(session: AsyncSession, plans: Sequence[TaskPlan]) -> bool:
    """Write merged plans (at most one per loan and method) in one statement; whether any
    task now waits for an agent."""
    if not plans:
        return False
    rows = await session.execute(
        _UPSERT_TASKS,
        {
            "loan_ids": [p.loan_id for p in plans],
            "methods": [str(p.method) for p in plans],
            "due_ons": [p.due_on for p in plans],
            "reasons": [json.dumps(p.reason) for p in plans],
            "source_event_ids": [p.source_event_id for p in plans],
        },
    )
    return any(row.awaiting_dispatch for row in rows)


class Standing(NamedTuple):
    """What a batch learnt of a loan; None leaves a field as it is (dates only move on).
    A named tuple, as `LoanFacts`: one per loan of a batch."""

    loan_id: str
    days_past_due: int | None = None
    last_repayment_status: str | None = None
    last_visit_on: date | None = None
    last_field_on: date | None = None
    last_third_party_on: date | None = None
    last_visit_clean: bool | None = None
    on_time_streak: int | None = None
    tier_shift: int | None = None


# (column, array type, how a batch's value `s` merges with the stored one `l`)
_STANDING: tuple[tuple[str, str, str], ...] = (
    ("days_past_due", "integer", "COALESCE(s.{c}, l.{c})"),
    ("last_repayment_status", "varchar", "COALESCE(s.{c}, l.{c})"),
    ("last_visit_on", "date", "GREATEST(l.{c}, s.{c})"),
    ("last_field_on", "date", "GREATEST(l.{c}, s.{c})"),
    ("last_third_party_on", "date", "GREATEST(l.{c}, s.{c})"),
    ("last_visit_clean", "boolean", "COALESCE(s.{c}, l.{c})"),
    ("on_time_streak", "smallint", "COALESCE(s.{c}, l.{c})"),
    ("tier_shift", "smallint", "COALESCE(s.{c}, l.{c})"),
)
_STANDING_COLUMNS = [c for c, _, _ in _STANDING]
_MERGED = {c: merge.format(c=c) for c, _, merge in _STANDING} | {
    "next_due_on": "CASE WHEN s.tasks_moved THEN (SELECT min(t.due_on)"
    " FROM scheduler.visit_tasks AS t WHERE t.loan_id = l.loan_id AND t.status = 'open')"
    " ELSE l.next_due_on END"
}
# A loan whose standing this batch does not change is not written: at month end most
# postings are paid on a loan that was already current, and rewriting its row would cost a
# new row version and its WAL for nothing. The merge is written out twice (the change and
# the test whether there is one) rather than computed in a subquery joined back to the
# loans: that join read every loan of the batch twice.
_UPDATE_STANDING = text(
    "UPDATE scheduler.loans AS l SET "
    + ", ".join(f"{c} = {merged}" for c, merged in _MERGED.items())
    + ", updated_at = now()"
    " FROM unnest(CAST(:loan_id AS varchar[]), CAST(:tasks_moved AS boolean[]), "
    + ", ".join(f"CAST(:{c} AS {kind}[])" for c, kind, _ in _STANDING)
    + f") AS s(loan_id, tasks_moved, {', '.join(_STANDING_COLUMNS)})"
    " WHERE l.loan_id = s.loan_id"
    f" AND (l.{', l.'.join(_MERGED)}) IS DISTINCT FROM ({', '.join(_MERGED.values())})"
)


async def update_standing(
    session: AsyncSession,
    standings: Sequence[Standing],
    tasks_moved: Collection[str] | None = None,
) -> None:
    """Save the loans' standing in one statement, and the `next_due_on` of the loans in
    `tasks_moved` (all of them if None): the soonest open task after this transaction's
    writes (a completed task can make it later). A loan whose tasks this transaction left
    alone keeps its date without a look at its tasks: at month end that is most of a batch
    (postings paid on time plan nothing). `updated_at` moves only for loans whose standing
    changed."""
    if not standings:
        return
    moved = [tasks_moved is None or s.loan_id in tasks_moved for s in standings]
    await session.execute(
        _UPDATE_STANDING,
        {"loan_id": [s.loan_id for s in standings], "tasks_moved": moved}
        | {c: [getattr(s, c) for s in standings] for c in _STANDING_COLUMNS},
    )


@dataclass(frozen=True)
class AlertSeen:
    """The latest publication of an alert the scheduler acted on (`scheduler.alert_states`)."""

    alert_id: uuid.UUID
    loan_id: str
    rule: str
    severity: str
    recommended_action: str
    occurred_at: datetime

    @property
    def state(self) -> tuple[str, str, str]:
        """What an escalation changes; a repeat publication keeps it."""
        return self.rule, str(self.severity), str(self.recommended_action)


async def alert_states(
    session: AsyncSession, alert_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, AlertSeen]:
    """The last publication acted on of each of `alert_ids` that has one (one query)."""
    if not alert_ids:
        return {}
    rows = await session.execute(
        text(
            "SELECT alert_id, loan_id, rule, severity, recommended_action, occurred_at"
            " FROM scheduler.alert_states WHERE alert_id = ANY(CAST(:ids AS uuid[]))"
        ),
        {"ids": sorted(alert_ids)},
    )
    return {
        r.alert_id: AlertSeen(
            r.alert_id, r.loan_id, r.rule, r.severity, r.recommended_action, r.occurred_at
        )
        for r in rows
    }


async def save_alert_states(session: AsyncSession, states: Sequence[AlertSeen]) -> None:
    """Keep each alert's newest publication (one statement; an older one never wins)."""
    if not states:
        return
    ordered = sorted(states, key=lambda a: a.alert_id)
    await session.execute(
        text(
            "INSERT INTO scheduler.alert_states AS s"
            " (alert_id, loan_id, rule, severity, recommended_action, occurred_at)"
            " SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:loans AS varchar[]),"
            "   CAST(:rules AS varchar[]), CAST(:severities AS varchar[]),"
            "   CAST(:actions AS varchar[]), CAST(:at AS timestamptz[]))"
            " ON CONFLICT (alert_id) DO UPDATE SET rule = excluded.rule,"
            "   severity = excluded.severity, recommended_action = excluded.recommended_action,"
            "   occurred_at = excluded.occurred_at"
            " WHERE excluded.occurred_at > s.occurred_at"
        ),
        {
            "ids": [a.alert_id for a in ordered],
            "loans": [a.loan_id for a in ordered],
            "rules": [a.rule for a in ordered],
            "severities": [str(a.severity) for a in ordered],
            "actions": [str(a.recommended_action) for a in ordered],
            "at": [a.occurred_at for a in ordered],
        },
    )


async def save_repayment_plans(
    session: AsyncSession, plans: Sequence[RepaymentPlanApproved]
) -> int:
    """Keep approved repayment plans (one statement); a plan already kept is left as it
    is, so a redelivered approval changes nothing. How many were new."""
    if not plans:
        return 0
    result = await session.execute(
        text(
            "INSERT INTO scheduler.repayment_plans"
            " (plan_id, loan_id, alert_id, due_dates, approved_at)"
            " SELECT p.plan_id, p.loan_id, p.alert_id,"
            "        ARRAY(SELECT CAST(d AS date)"
            "              FROM jsonb_array_elements_text(CAST(p.due_dates AS jsonb)) AS d),"
            "        p.approved_at"
            " FROM unnest(CAST(:plan_ids AS uuid[]), CAST(:loan_ids AS varchar[]),"
            "             CAST(:alert_ids AS uuid[]), CAST(:due_dates AS text[]),"
            "             CAST(:approved AS timestamptz[]))"
            "      AS p(plan_id, loan_id, alert_id, due_dates, approved_at)"
            " ORDER BY p.plan_id"
            " ON CONFLICT (plan_id) DO NOTHING"
        ),
        {
            "plan_ids": [p.plan_id for p in plans],
            "loan_ids": [p.loan_id for p in plans],
            "alert_ids": [p.alert_id for p in plans],
            # A plan's due dates as one JSON array each: unnest cannot take ragged arrays.
            "due_dates": [
                json.dumps(sorted(i.due_on.isoformat() for i in p.installments)) for p in plans
            ],
            "approved": [p.occurred_at for p in plans],
        },
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- dispatch -----------------------------------------------------------------------------

# The channel the dispatcher LISTENs on (dispatch.py).
DISPATCH_CHANNEL = "visit_tasks_awaiting_dispatch"


async def notify_dispatch(session: AsyncSession) -> None:
    """Wake the dispatchers when this transaction commits: call it in any transaction that
    leaves an open task without an agent or adds an agent. PostgreSQL folds the same
    notification sent twice in one transaction into one, and drops it on rollback."""
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": DISPATCH_CHANNEL})


async def try_dispatch_lock(session: AsyncSession) -> bool:
    """One dispatcher at a time (until this transaction ends): the loads it counts are then
    the loads it assigns against, so two replicas never overbook an agent between them."""
    got = await session.execute(
        text("SELECT pg_try_advisory_xact_lock(hashtext('scheduler.dispatch'))")
    )
    return bool(got.scalar_one())


# Open tasks without an agent that some active agent of their loan's region can do on a day
# dispatch would give it (policy.available_day: the due day, else back to today or
# SEARCH_DAYS before it, else up to SEARCH_DAYS after it or today). Tasks nobody can take
# (no able agent, or every able one away for the whole window) wait where they are and are
# never read: read, they would fill every pass and starve the tasks behind them.
# The waiting queue is read per (region, method) some active agent covers, each an index
# range scan of `ix_visit_tasks_awaiting_dispatch`: tasks of a region or method nobody
# covers are never read, so a backlog there (a new branch, a re-plan of a portfolio nobody
# staffs yet) costs a pass nothing. A pair with an agent who works some weekday and has no
# absence ahead can take any task (dispatch's window is over a month of days); only the
# other pairs check, task by task, that an agent works a day of the window and is not away.
_WAITING = text(
    """
    WITH pairs AS MATERIALIZED (
        SELECT a.region, m.method,
               bool_or(cardinality(a.working_days) > 0
                       AND NOT EXISTS (SELECT 1 FROM scheduler.agent_absences AS b
                                       WHERE b.agent_id = a.agent_id
                                         AND b.ends_on >= CAST(:today AS date))) AS free
        FROM scheduler.agents AS a CROSS JOIN LATERAL unnest(a.methods) AS m(method)
        WHERE a.active AND m.method <> 'third_party'
        GROUP BY a.region, m.method
    ), head AS (
        SELECT w.task_id, w.due_on
        FROM pairs AS p CROSS JOIN LATERAL (
            SELECT t.task_id, t.due_on FROM scheduler.visit_tasks AS t
            WHERE t.region = p.region AND t.method = p.method
              AND t.status = 'open' AND t.agent_id IS NULL AND t.method <> 'third_party'
              AND (t.due_on, t.task_id) > (CAST(:after_due AS date), CAST(:after_id AS uuid))
              AND (p.free OR EXISTS (
                  SELECT 1 FROM scheduler.agents AS a
                  WHERE a.active AND a.region = p.region AND p.method = ANY(a.methods)
                    AND EXISTS (
                        SELECT 1
                        FROM (SELECT t.due_on
                              UNION ALL
                              SELECT t.due_on - k.n
                              FROM generate_series(1, CAST(:search_days AS integer)) AS k(n)
                              WHERE t.due_on - k.n >= CAST(:today AS date)
                              UNION ALL
                              SELECT GREATEST(t.due_on + 1, CAST(:today AS date)) + k.n
                              FROM generate_series(0, CAST(:search_days AS integer) - 1) AS k(n)
                             ) AS d(day)
                        WHERE CAST(extract(isodow FROM d.day) AS smallint) = ANY(a.working_days)
                          AND NOT EXISTS (SELECT 1 FROM scheduler.agent_absences AS b
                                          WHERE b.agent_id = a.agent_id
                                            AND d.day BETWEEN b.starts_on AND b.ends_on))))
            ORDER BY t.due_on, t.task_id LIMIT :limit
        ) AS w
        ORDER BY w.due_on, w.task_id LIMIT :limit
    )
    SELECT t.task_id, t.region, t.method, t.due_on,
           -- The agent who last had a task of this loan: the borrower keeps its agent.
           (SELECT p.agent_id FROM scheduler.visit_tasks AS p
            WHERE p.loan_id = t.loan_id AND p.agent_id IS NOT NULL
            ORDER BY p.assigned_at DESC NULLS LAST LIMIT 1) AS previous_agent
    FROM scheduler.visit_tasks AS t
    -- Looked up by key (an array, not a join the planner could answer with a scan).
    WHERE t.task_id = ANY(ARRAY(SELECT h.task_id FROM head AS h))
      AND t.status = 'open' AND t.agent_id IS NULL
    ORDER BY t.due_on, t.task_id FOR UPDATE OF t SKIP LOCKED
    """
)
# Before every task: where a drain starts.
QUEUE_START: tuple[date, uuid.UUID] = (date(1, 1, 1), uuid.UUID(int=0))


async def waiting_tasks(
    session: AsyncSession,
    limit: int,
    today: date,
    after: tuple[date, uuid.UUID] = QUEUE_START,
) -> list[WaitingTask]:
    """Up to `limit` open tasks without an agent that dispatch can place (`_WAITING`),
    soonest first, after `after` (due date, task id): a drain pages through the queue. Rows
    locked by a planner or a supervisor right now are skipped, not waited for."""
    rows = await session.execute(
        _WAITING,
        {
            "limit": limit,
            "today": today,
            "search_days": SEARCH_DAYS,
            "after_due": after[0],
            "after_id": after[1],
        },
    )
    return [WaitingTask(r.task_id, r.region, r.method, r.due_on, r.previous_agent) for r in rows]


async def dispatch_roster(
    session: AsyncSession, regions: Collection[str], days: Collection[date]
) -> list[RosterAgent]:
    """The active agents of `regions` with their open load, and their open tasks on each of
    `days`, in one statement: open tasks are counted per agent and day, and summed per
    agent over all days by a window."""
    rows = await session.execute(
        text(
            """
            WITH candidates AS (
                SELECT a.agent_id, a.region, a.methods, a.daily_capacity, a.working_days,
                       (SELECT COALESCE(array_agg(b.starts_on ORDER BY b.starts_on), '{}')
                        FROM scheduler.agent_absences AS b
                        WHERE b.agent_id = a.agent_id AND b.ends_on >= current_date)
                           AS absent_from,
                       (SELECT COALESCE(array_agg(b.ends_on ORDER BY b.starts_on), '{}')
                        FROM scheduler.agent_absences AS b
                        WHERE b.agent_id = a.agent_id AND b.ends_on >= current_date)
                           AS absent_to
                FROM scheduler.agents AS a
                WHERE a.active AND a.region = ANY(CAST(:regions AS varchar[]))
            ), per_day AS (
                SELECT t.agent_id, t.due_on, count(*) AS due_that_day,
                       sum(count(*)) OVER (PARTITION BY t.agent_id) AS open_tasks
                FROM scheduler.visit_tasks AS t JOIN candidates AS c USING (agent_id)
                WHERE t.status = 'open' AND t.agent_id IS NOT NULL
                GROUP BY t.agent_id, t.due_on
            )
            SELECT c.agent_id, c.region, c.methods, c.daily_capacity, c.working_days,
                   c.absent_from, c.absent_to,
                   COALESCE(max(p.open_tasks), 0) AS open_tasks,
                   array_remove(array_agg(p.due_on) FILTER
                       (WHERE p.due_on = ANY(CAST(:days AS date[]))), NULL) AS days,
                   array_remove(array_agg(p.due_that_day) FILTER
                       (WHERE p.due_on = ANY(CAST(:days AS date[]))), NULL) AS counts
            FROM candidates AS c LEFT JOIN per_day AS p USING (agent_id)
            GROUP BY c.agent_id, c.region, c.methods, c.daily_capacity, c.working_days,
                     c.absent_from, c.absent_to
            """
        ),
        {"regions": sorted(set(regions)), "days": sorted(set(days))},
    )
    return [
        RosterAgent(
            agent_id=r.agent_id,
            region=r.region,
            methods=frozenset(r.methods),
            daily_capacity=r.daily_capacity,
            open_tasks=int(r.open_tasks),
            due_by_day=dict(zip(r.days or [], (int(n) for n in r.counts or []), strict=True)),
            working_days=frozenset(r.working_days),
            absences=tuple(zip(r.absent_from, r.absent_to, strict=True)),
        )
        for r in rows
    ]


async def assign_tasks(
    session: AsyncSession,
    assignments: Mapping[uuid.UUID, Assignment],
    waiting: Mapping[uuid.UUID, date],
) -> int:
    """Give each task its agent (and the day it works, if the due day was not), only where
    it is still open and without one (a supervisor may have assigned it meanwhile); how
    many were assigned. `waiting` is each task's due date as read (locked) by this pass: a
    task moved to another day moves its loan's `next_due_on` with it."""
    if not assignments:
        return 0
    rows = (
        await session.execute(
            text(
                "UPDATE scheduler.visit_tasks AS t SET agent_id = v.agent_id,"
                " assigned_at = now(), due_on = v.due_on,"
                " reason = CASE WHEN v.due_on = t.due_on THEN t.reason"
                "          ELSE t.reason || jsonb_build_object('moved_from', t.due_on::text,"
                "                                              'moved_for', 'agent availability')"
                "          END"
                " FROM unnest(CAST(:task_ids AS uuid[]), CAST(:agent_ids AS varchar[]),"
                "             CAST(:due_ons AS date[]), CAST(:read_dues AS date[]))"
                "      AS v(task_id, agent_id, due_on, read_due)"
                " WHERE t.task_id = v.task_id AND t.status = 'open' AND t.agent_id IS NULL"
                "   AND t.method <> 'third_party'"
                " RETURNING t.loan_id, v.due_on <> v.read_due AS moved"
            ),
            {
                "task_ids": list(assignments),
                "agent_ids": [a.agent_id for a in assignments.values()],
                "due_ons": [a.due_on for a in assignments.values()],
                "read_dues": [waiting[task_id] for task_id in assignments],
            },
        )
    ).all()
    # A second statement: the first one's own snapshot still has the old due dates.
    await refresh_next_due(session, {row.loan_id for row in rows if row.moved})
    return len(rows)


async def refresh_next_due(session: AsyncSession, loan_ids: Collection[str]) -> int:
    """Set the loans' `next_due_on` to their soonest open task after this transaction's
    writes (one statement); how many changed."""
    if not loan_ids:
        return 0
    result = await session.execute(_NEXT_DUE, {"loan_ids": sorted(set(loan_ids))})
    return int(result.rowcount)  # type: ignore[attr-defined]


_NEXT_DUE = text(
    """
    UPDATE scheduler.loans AS l SET next_due_on = n.next_due_on, updated_at = now()
    FROM (SELECT c.loan_id, (SELECT min(t.due_on) FROM scheduler.visit_tasks AS t
                             WHERE t.loan_id = c.loan_id AND t.status = 'open') AS next_due_on
          FROM unnest(CAST(:loan_ids AS varchar[])) AS c(loan_id)) AS n
    WHERE l.loan_id = n.loan_id AND l.next_due_on IS DISTINCT FROM n.next_due_on
    """
)


# An agent's open tasks it cannot do: it is inactive (departed) or now works another region,
# or the task is due on a day it does not work or is absent. They go back to dispatch, which
# finds someone else.
_RELEASE = text(
    """
    UPDATE scheduler.visit_tasks AS t SET agent_id = NULL, assigned_at = NULL
    FROM scheduler.agents AS a
    WHERE t.agent_id = a.agent_id AND a.agent_id = ANY(CAST(:agent_ids AS varchar[]))
      AND t.agent_id IS NOT NULL AND t.status = 'open'
      AND (NOT a.active OR t.region <> a.region
           OR NOT CAST(extract(isodow FROM t.due_on) AS smallint) = ANY(a.working_days)
           OR EXISTS (SELECT 1 FROM scheduler.agent_absences AS b
                      WHERE b.agent_id = a.agent_id AND t.due_on BETWEEN b.starts_on
                                                                    AND b.ends_on))
    """
)


async def _back_to_dispatch(session: AsyncSession, statement: TextClause, **ids: Any) -> int:
    """Run `statement`, which takes open tasks from their agents, with each of `ids` as a
    sorted array; wake the dispatcher when it did. How many tasks it took."""
    result = await session.execute(statement, {k: sorted(set(v)) for k, v in ids.items()})
    taken = int(result.rowcount)  # type: ignore[attr-defined]
    if taken:
        await notify_dispatch(session)
    return taken


async def release_tasks(session: AsyncSession, agent_ids: Collection[str]) -> int:
    """Send the open tasks `agent_ids` cannot do back to dispatch (one statement); how many."""
    if not agent_ids:
        return 0
    return await _back_to_dispatch(session, _RELEASE, agent_ids=agent_ids)


# A loan moved to another region (its registration changed): its open tasks move with it
# and leave their agent, who works the old region; dispatch finds one in the new.
_MOVE_TASKS = text(
    """
    UPDATE scheduler.visit_tasks AS t SET region = l.region, agent_id = NULL, assigned_at = NULL
    FROM scheduler.loans AS l
    WHERE l.loan_id = ANY(CAST(:loan_ids AS varchar[])) AND t.loan_id = l.loan_id
      AND t.status = 'open' AND t.region <> l.region
    """
)


async def move_tasks(session: AsyncSession, loan_ids: Collection[str]) -> int:
    """Open tasks of `loan_ids` follow their loan's region and go back to dispatch (one
    statement); how many moved."""
    if not loan_ids:
        return 0
    return await _back_to_dispatch(session, _MOVE_TASKS, loan_ids=loan_ids)


async def replace_absences(
    session: AsyncSession, agent_id: str, absences: Sequence[tuple[date, date]]
) -> None:
    """The agent's absences become `absences` (two statements whatever their number)."""
    await session.execute(
        text("DELETE FROM scheduler.agent_absences WHERE agent_id = :agent_id"),
        {"agent_id": agent_id},
    )
    if absences:
        await session.execute(
            text(
                "INSERT INTO scheduler.agent_absences (agent_id, starts_on, ends_on)"
                " SELECT :agent_id, s, e FROM unnest(CAST(:starts AS date[]),"
                "                                    CAST(:ends AS date[])) AS a(s, e)"
            ),
            {
                "agent_id": agent_id,
                "starts": [a for a, _ in absences],
                "ends": [b for _, b in absences],
            },
        )


# --- lists --------------------------------------------------------------------------------


async def list_tasks(
    session: AsyncSession, who: Principal, query: TaskQuery, *, to_item: Callable[[VisitTask], T]
) -> Page[T]:
    """A page of the tasks `who` may read, narrowed by the query's filters: for an agent
    soonest due first (overdue and today's lead), for everyone else oldest first unless
    `order=due`; `region` narrows to the loans of a region (a supervisor's view)."""
    stmt = select(VisitTask).where(visible_tasks(who))
    # An agent's own tasks are its list: the agent it names is not a filter on them.
    agent_id = None if who.is_agent else query.agent_id
    if agent_id is not None:
        stmt = stmt.where(col(VisitTask.agent_id) == agent_id)
    if query.loan_id is not None:
        stmt = stmt.where(col(VisitTask.loan_id) == query.loan_id)
    if query.status is not None:
        stmt = stmt.where(col(VisitTask.status) == query.status)
    if query.due_from is not None:
        stmt = stmt.where(col(VisitTask.due_on) >= query.due_from)
    if query.due_to is not None:
        stmt = stmt.where(col(VisitTask.due_on) <= query.due_to)
    if query.region is not None:
        # A supervisor's view of its region's work (`?region=SH&order=due`).
        stmt = stmt.where(
            exists().where(
                col(Loan.loan_id) == col(VisitTask.loan_id), col(Loan.region) == query.region
            )
        )
    order = query.order or ("due" if who.is_agent else "created")
    # keyset_page orders by any (timestamp, uuid) pair of columns or expressions.
    key = typing.cast(SortKey, DUE_ORDER) if order == "due" else TASK_ORDER
    return await keyset_page(
        session, stmt, key=key, cursor=query.cursor, limit=query.limit, to_item=to_item
    )
