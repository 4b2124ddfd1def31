"""The portfolio re-plan: every loan's risk tier and routine visits, set-based in SQL.

`python -m services.scheduler.replan` (the worker also runs it once a day and when a new
policy version is installed). The loans are taken in chunks of `loan_id` ranges, one
transaction each, and each chunk costs the same statements whatever its size:

1. a temporary table of the tier the policy gives each loan's facts (credit grade,
   loan-to-value, remaining term) moved by its events' shift (`policy.risk_tier`);
2. a temporary table of each loan's routine plan by method (`policy.routine_visits`) at
   that tier: the contact by its tier's cadence after the last visit (the first follow-up
   before any), the field inspection and the third-party check by their cadences;
3. `UPDATE visit_tasks`: open routine tasks follow the plan, either way (a new policy can
   make them later); tasks of other rules (arrears, alerts, findings, collateral), tasks a
   supervisor rescheduled by hand and completed history are left as they are;
4. one pass matching the plans due within the policy's horizon to the open tasks: a task
   is opened where the loan has none of that method; an open task due later is brought
   forward (the more urgent plan wins), an earlier one is kept (`INSERT … ON CONFLICT`
   instead if a planner raced it);
5. `INSERT … ON CONFLICT`: the call before the next installment of each approved repayment
   plan (`plan_repayment_calls`; nothing to do without plans);
6. `UPDATE loans`, each loan at most once and only if something changed: its tier, and
   its `next_due_on` (brought nearer by the tasks 4 opened, looked up again for the loans
   3 and 5 changed).

A cold portfolio's millions of new tasks get UUIDv7 ids, appended to the primary key.
What each statement changed is counted and reported (and kept in `replan_runs`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import policies, repository
from services.scheduler.policy import ROUTINE_RULES
from services.scheduler.settings import SchedulerSettings
from services.scheduler.visit_policy import PolicyInForce, Tier
from shared.db import engine_for, make_session_factory, unit_of_work

log = logging.getLogger(__name__)

CHUNK_LOANS = 50_000
_TIERS = [t.label for t in sorted(Tier)]


@dataclass
class ReplanChanges:
    """What a re-plan changed, by kind (counts)."""

    loans: int = 0
    tiers_changed: int = 0
    tasks_replanned: int = 0
    tasks_created: int = 0
    tasks_advanced: int = 0
    plan_calls: int = 0
    next_due_changed: int = 0

    def add(self, other: ReplanChanges) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


# --- the loans a statement covers ---------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """The loans of a run: a chunk of loan ids (lo, hi], some loan ids, or a region."""

    lo: str | None = None
    hi: str | None = None
    loan_ids: tuple[str, ...] | None = None
    region: str | None = None

    def where(self, alias: str) -> str:
        conditions = []
        if self.lo is not None:
            conditions.append(f"{alias}.loan_id > :scope_lo")
        if self.hi is not None:
            conditions.append(f"{alias}.loan_id <= :scope_hi")
        if self.loan_ids is not None:
            conditions.append(f"{alias}.loan_id = ANY(CAST(:scope_ids AS varchar[]))")
        if self.region is not None:
            conditions.append(f"{alias}.region = :scope_region")
        return " AND ".join(conditions) or "true"

    def task_where(self, alias: str) -> str:
        """The scope's loan-id conditions on a table of tasks (the region needs the loans)."""
        return Scope(self.lo, self.hi, self.loan_ids).where(alias)

    def params(self) -> dict[str, Any]:
        return {
            "scope_lo": self.lo,
            "scope_hi": self.hi,
            "scope_ids": list(self.loan_ids or ()),
            "scope_region": self.region,
        }


def policy_params(p: PolicyInForce, today: date) -> dict[str, Any]:
    """The policy's numbers as bind parameters: the SQL is the same for every version."""
    risk, tiers = p.rules.risk_tier, p.rules.tiers
    cadences = [tiers.of(t) for t in sorted(Tier)]
    return (
        {
            "today": today,
            "version": p.version,
            "medium_from": risk.medium_from,
            "high_from": risk.high_from,
            "tiers": _TIERS,
            "contact_months": [c.contact_every_months for c in cadences],
            "field_months": [c.field_every_months for c in cadences],
            "third_party_months": [c.third_party_every_months for c in cadences],
            "first_months": p.rules.first_follow_up.after_months,
            "first_method": str(p.rules.first_follow_up.method),
            "checks": json.dumps([str(c) for c in p.rules.third_party_checks]),
            "horizon": p.rules.planning.horizon_days,
            "routine_rules": list(ROUTINE_RULES),
            "plan_method": str(p.rules.repayment_plans.method),
            "plan_days_before": p.rules.repayment_plans.call_days_before,
        }
        | {f"ltv_from_{i}": b.from_ratio for i, b in enumerate(risk.ltv_bands)}
        | {f"term_from_{i}": b.from_months for i, b in enumerate(risk.remaining_term_bands)}
    )


# policy.tier_points and policy.risk_tier, in SQL.
TIER_OF_SQL = """
    (CAST(:tiers AS varchar[]))[1 + LEAST(GREATEST(
        CASE WHEN f.points >= :high_from THEN 2 WHEN f.points >= :medium_from THEN 1 ELSE 0 END
        + f.tier_shift, 0), 2)]
"""


def points_sql(p: PolicyInForce) -> str:
    """policy.tier_points as one SQL expression of the loan `l`: CASE expressions with a
    bind parameter per band (`policy_params` names them), so nothing is looked up per row."""
    risk = p.rules.risk_tier
    grade = "CASE l.credit_grade " + " ".join(
        f"WHEN '{g}' THEN {int(points)}" for g, points in risk.grade_points.items()
    )
    ltv = "round(l.principal / NULLIF(l.valuation, 0), 4)"
    ltv_bands = sorted(enumerate(risk.ltv_bands), key=lambda b: -b[1].points)
    ltv_case = " ".join(
        f"WHEN l.valuation <= 0 OR {ltv} >= CAST(:ltv_from_{i} AS numeric) THEN {b.points}"
        for i, b in ltv_bands
    )
    term_bands = sorted(enumerate(risk.remaining_term_bands), key=lambda b: -b[1].points)
    remaining = (
        "GREATEST(l.term_months - (extract(year FROM age(CAST(:today AS date), l.disbursed_on))"
        " * 12 + extract(month FROM age(CAST(:today AS date), l.disbursed_on)))::int, 0)"
    )
    term_case = " ".join(
        f"WHEN {remaining} >= CAST(:term_from_{i} AS int) THEN {b.points}" for i, b in term_bands
    )
    return (
        f"({grade} ELSE 0 END)"
        + (f" + (CASE {ltv_case} ELSE 0 END)" if ltv_bands else "")
        + (f" + (CASE {term_case} ELSE 0 END)" if term_bands else "")
    )


def _tier_update(p: PolicyInForce, scope: Scope) -> str:
    return f"""
    WITH f AS (
        SELECT l.loan_id, l.tier_shift, {points_sql(p)} AS points
        FROM scheduler.loans AS l WHERE {scope.where("l")}
    ), upd AS (
        UPDATE scheduler.loans AS l SET risk_tier = t.tier, updated_at = now()
        FROM (SELECT f.loan_id, {TIER_OF_SQL} AS tier FROM f) AS t
        WHERE l.loan_id = t.loan_id AND l.risk_tier IS DISTINCT FROM t.tier
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM f) AS loans, (SELECT count(*) FROM upd) AS changed
    """


async def recompute_tiers(
    session: AsyncSession, p: PolicyInForce, today: date, loan_ids: Collection[str]
) -> int:
    """Recompute the tiers of `loan_ids` (their facts or shift changed): one statement."""
    if not loan_ids:
        return 0
    scope = Scope(loan_ids=tuple(sorted(set(loan_ids))))
    row = (
        await session.execute(
            text(_tier_update(p, scope)), policy_params(p, today) | scope.params()
        )
    ).one()
    return int(row.changed)


# The tier the policy gives each loan of the chunk today, read once (nothing written to the
# loans yet): the plan goes by it, and `_settle_loans` writes it. `updated_at` as read tells
# `_settle_loans` whether an event changed the loan since (and recomputed its tier itself).
def _tier_table(p: PolicyInForce, scope: Scope) -> str:
    return f"""
    CREATE TEMP TABLE replan_tier ON COMMIT DROP AS
    SELECT f.loan_id, f.updated_at, CAST({TIER_OF_SQL} AS varchar) AS tier
    FROM (SELECT l.loan_id, l.updated_at, l.tier_shift, {points_sql(p)} AS points
          FROM scheduler.loans AS l WHERE {scope.where("l")}) AS f
    """


# policy.routine_visits, in SQL: one row per loan and method, by the loan's tier today. The
# row keeps what its reason is made of, not the reason: most plans are neither due within
# the horizon nor different from the open task, and building three JSON objects per loan
# was two fifths of a steady day's re-plan. `_reason` builds it where a task is written.
def _plan_table(scope: Scope) -> str:
    return f"""
    CREATE TEMP TABLE replan_plan ON COMMIT DROP AS
    SELECT l.loan_id, l.region, m.method, m.due_on, m.rule, k0.tier, m.since
    FROM scheduler.loans AS l JOIN replan_tier AS k0 USING (loan_id)
    CROSS JOIN LATERAL (SELECT array_position(CAST(:tiers AS varchar[]), k0.tier) AS i) AS k
    CROSS JOIN LATERAL (VALUES
        (CASE WHEN l.last_visit_on IS NULL THEN CAST(:first_method AS varchar)
              ELSE 'phone' END,
         CASE WHEN l.last_visit_on IS NULL
              THEN (l.disbursed_on + make_interval(months => CAST(:first_months AS int)))::date
              ELSE (l.last_visit_on
                    + make_interval(months => (CAST(:contact_months AS int[]))[k.i]))::date
         END,
         CASE WHEN l.last_visit_on IS NULL THEN 'first_follow_up' ELSE 'routine_contact' END,
         COALESCE(l.last_visit_on, l.disbursed_on)),
        ('field',
         (COALESCE(l.last_field_on, l.disbursed_on)
          + make_interval(months => (CAST(:field_months AS int[]))[k.i]))::date,
         'field_inspection',
         COALESCE(l.last_field_on, l.disbursed_on)),
        ('third_party',
         (COALESCE(l.last_third_party_on, l.disbursed_on)
          + make_interval(months => (CAST(:third_party_months AS int[]))[k.i]))::date,
         'third_party_check',
         COALESCE(l.last_third_party_on, l.disbursed_on))
    ) AS m(method, due_on, rule, since)
    WHERE {scope.where("l")}
    """


def _reason(plan: str) -> str:
    """The reason of a routine plan (a row of `replan_plan` as `plan`): its rule, the
    inputs it went by, the policy version."""
    return f"""jsonb_build_object(
        'rule', {plan}.rule,
        'inputs', CASE {plan}.rule
            WHEN 'first_follow_up' THEN
                jsonb_build_object('disbursed_on', {plan}.since::text,
                                   'after_months', CAST(:first_months AS int))
            WHEN 'routine_contact' THEN
                jsonb_build_object('risk_tier', {plan}.tier,
                                   'last_visit_on', {plan}.since::text)
            WHEN 'field_inspection' THEN
                jsonb_build_object('risk_tier', {plan}.tier, 'since', {plan}.since::text)
            ELSE
                jsonb_build_object('risk_tier', {plan}.tier, 'since', {plan}.since::text,
                                   'checks', CAST(:checks AS jsonb))
            END,
        'policy_version', CAST(:version AS int))"""


def _replan_open(scope: Scope) -> str:
    # The chunk's loan-id range on the tasks too: an index range scan, not the whole table.
    return f"""
    UPDATE scheduler.visit_tasks AS t
    SET due_on = p.due_on,
        -- The other plans a kept task records stay with it.
        reason = {_reason("p")} || CASE WHEN t.reason ? 'also'
                                      THEN jsonb_build_object('also', t.reason -> 'also')
                                      ELSE '{{}}'::jsonb END
    FROM replan_plan AS p
    WHERE t.loan_id = p.loan_id AND t.method = p.method AND t.status = 'open'
      AND {scope.task_where("t")}
      AND t.reason ->> 'rule' = ANY(CAST(:routine_rules AS varchar[]))
      AND NOT t.reason ? 'rescheduled_from'
      -- What `_reason` is made of, compared without building it for every open task (the
      -- policy version stands for the policy's own numbers).
      AND (t.due_on IS DISTINCT FROM p.due_on
           OR t.reason ->> 'rule' IS DISTINCT FROM p.rule
           OR t.reason ->> 'policy_version' IS DISTINCT FROM CAST(:version AS int)::text
           OR t.reason -> 'inputs' ->> 'risk_tier' IS DISTINCT FROM
              (CASE WHEN p.rule = 'first_follow_up' THEN NULL ELSE p.tier END)
           OR COALESCE(t.reason -> 'inputs' ->> 'since',
                       t.reason -> 'inputs' ->> 'last_visit_on',
                       t.reason -> 'inputs' ->> 'disbursed_on') IS DISTINCT FROM p.since::text)
    RETURNING t.loan_id
    """


# An open task of the method due no later already covers the plan: such rows are left out
# before the insert (an anti-join), so a steady portfolio costs no conflicting inserts.
# Task ids are UUIDv7 (time-ordered): a cold portfolio's millions of tasks are appended to
# the primary key's right edge rather than scattered over it. What was opened or brought
# forward is kept for `_settle_loans`.
def _open_due(scope: Scope) -> str:
    return f"""
    WITH w AS (
        INSERT INTO scheduler.visit_tasks AS t
            (task_id, loan_id, region, method, due_on, status, reason, created_at)
        SELECT uuidv7(), p.loan_id, p.region, p.method, p.due_on, 'open', {_reason("p")},
               now()
        FROM replan_plan AS p
        WHERE p.due_on <= CAST(:today AS date) + CAST(:horizon AS int)
          AND NOT EXISTS (SELECT 1 FROM scheduler.visit_tasks AS o
                          WHERE o.loan_id = p.loan_id AND o.method = p.method
                            AND o.status = 'open' AND o.due_on <= p.due_on
                            AND {scope.task_where("o")})
        ORDER BY p.loan_id, p.method
        ON CONFLICT (loan_id, method) WHERE status = 'open' DO UPDATE
            SET due_on = excluded.due_on, reason = excluded.reason
            WHERE excluded.due_on < t.due_on
        RETURNING t.loan_id, t.due_on, (t.xmax = 0) AS created
    )
    INSERT INTO replan_opened (loan_id, due_on, created)
    SELECT loan_id, due_on, created FROM w
"""


# The same in one pass without ON CONFLICT's speculative insertion (a fifth of the cost of
# a cold portfolio's millions of inserts): each plan due within the horizon is matched to
# its loan's open task of the method once; no open task: a task is inserted; one due later:
# it is brought forward. A planner that opens the same task between the match and the
# insert makes it fail on the unique index; `replan_scope` then runs `_open_due` instead.
def _open_due_fast(scope: Scope) -> str:
    return f"""
    WITH c AS (
        SELECT p.loan_id, p.region, p.method, p.due_on, p.rule, p.tier, p.since,
               o.task_id AS open_id,
               o.due_on AS open_due
        FROM replan_plan AS p
        LEFT JOIN scheduler.visit_tasks AS o
               ON o.loan_id = p.loan_id AND o.method = p.method AND o.status = 'open'
              -- The chunk's range on the tasks too: without it the join read every open
              -- task of the portfolio for each chunk (28 s of a steady day's 44 s).
              AND {scope.task_where("o")}
        WHERE p.due_on <= CAST(:today AS date) + CAST(:horizon AS int)
    ), advanced AS (
        UPDATE scheduler.visit_tasks AS t SET due_on = c.due_on, reason = {_reason("c")}
        FROM c
        WHERE t.task_id = c.open_id AND c.due_on < c.open_due
          AND t.status = 'open' AND c.due_on < t.due_on
        RETURNING t.loan_id, t.due_on
    ), created AS (
        INSERT INTO scheduler.visit_tasks
            (task_id, loan_id, region, method, due_on, status, reason, created_at)
        SELECT uuidv7(), c.loan_id, c.region, c.method, c.due_on, 'open', {_reason("c")},
               now()
        FROM c WHERE c.open_id IS NULL
        ORDER BY c.loan_id, c.method
        RETURNING loan_id, due_on
    )
    INSERT INTO replan_opened (loan_id, due_on, created)
    SELECT loan_id, due_on, true FROM created
    UNION ALL
    SELECT loan_id, due_on, false FROM advanced
"""


# Each loan of the chunk written once, and only if something changed: its tier
# (`replan_tier`'s, unless an event wrote the loan meanwhile and recomputed it itself) and
# its `next_due_on`, which a task opened or brought forward can only bring nearer, and
# which is looked up again for the loans in `:exact` (a re-planned task may be due later).
_SETTLE_LOANS = """
    WITH n AS (
        SELECT k.loan_id, k.updated_at, k.tier, s.soonest, x.loan_id IS NOT NULL AS exact
        FROM replan_tier AS k
        LEFT JOIN (SELECT loan_id, min(due_on) AS soonest FROM replan_opened
                   GROUP BY loan_id) AS s USING (loan_id)
        LEFT JOIN (SELECT DISTINCT e.loan_id
                   FROM unnest(CAST(:exact AS varchar[])) AS e(loan_id)) AS x USING (loan_id)
    ), u AS (
        UPDATE scheduler.loans AS l
        SET risk_tier = CASE WHEN l.updated_at = n.updated_at THEN n.tier ELSE l.risk_tier END,
            next_due_on = CASE WHEN n.exact
                               THEN (SELECT min(t.due_on) FROM scheduler.visit_tasks AS t
                                     WHERE t.loan_id = l.loan_id AND t.status = 'open')
                               ELSE LEAST(l.next_due_on, n.soonest) END,
            updated_at = now()
        FROM n
        WHERE l.loan_id = n.loan_id
          AND (n.exact OR n.soonest < l.next_due_on
               OR (n.soonest IS NOT NULL AND l.next_due_on IS NULL)
               OR (l.updated_at = n.updated_at AND l.risk_tier IS DISTINCT FROM n.tier))
        RETURNING old.risk_tier IS DISTINCT FROM new.risk_tier AS tier_changed,
                  old.next_due_on IS DISTINCT FROM new.next_due_on AS due_changed
    )
    SELECT count(*) FILTER (WHERE tier_changed) AS tiers,
           count(*) FILTER (WHERE due_changed) AS next_due
    FROM u
"""


# Approved repayment plans (`scheduler.repayment_plans`, the loan's latest): a call
# `call_days_before` the plan's next installment (from today), one at a time. It opens when
# within the horizon, unless a call was made since that window began, or an open task of
# the method is due no later (it is that call). A sooner call takes an open task's place and
# lists what it displaced under `also`. Run by the re-plan and on each approved plan.
def _plan_calls(scope: Scope) -> str:
    return f"""
    WITH plans AS (
        SELECT DISTINCT ON (r.loan_id) r.loan_id, r.plan_id, r.due_dates
        FROM scheduler.repayment_plans AS r JOIN scheduler.loans AS l USING (loan_id)
        WHERE {scope.where("l")}
        ORDER BY r.loan_id, r.approved_at DESC, r.plan_id
    ), calls AS (
        SELECT p.loan_id, p.plan_id, n.due_on AS installment_on,
               GREATEST(CAST(:today AS date),
                        n.due_on - CAST(:plan_days_before AS int)) AS due_on
        FROM plans AS p
        CROSS JOIN LATERAL (SELECT min(d) AS due_on FROM unnest(p.due_dates) AS d
                            WHERE d >= CAST(:today AS date)) AS n
        WHERE n.due_on IS NOT NULL
    ), w AS (
        INSERT INTO scheduler.visit_tasks AS t
            (task_id, loan_id, region, method, due_on, status, reason, created_at)
        SELECT gen_random_uuid(), c.loan_id, l.region, CAST(:plan_method AS varchar), c.due_on,
               'open',
               jsonb_build_object(
                   'rule', 'repayment_plan_call',
                   'inputs', jsonb_build_object(
                       'plan_id', c.plan_id::text,
                       'installment_due_on', c.installment_on::text,
                       'days_before', CAST(:plan_days_before AS int)),
                   'policy_version', CAST(:version AS int)),
               now()
        FROM calls AS c JOIN scheduler.loans AS l USING (loan_id)
        WHERE c.due_on <= CAST(:today AS date) + CAST(:horizon AS int)
          AND (l.last_visit_on IS NULL
               OR l.last_visit_on < c.installment_on - CAST(:plan_days_before AS int))
          AND NOT EXISTS (SELECT 1 FROM scheduler.visit_tasks AS o
                          WHERE o.loan_id = c.loan_id AND o.method = :plan_method
                            AND o.status = 'open' AND o.due_on <= c.due_on)
        ORDER BY c.loan_id
        ON CONFLICT (loan_id, method) WHERE status = 'open' DO UPDATE
            SET due_on = excluded.due_on,
                reason = excluded.reason
                         || jsonb_build_object('also', jsonb_build_array(t.reason - 'also'))
            WHERE excluded.due_on < t.due_on
        RETURNING t.loan_id
    )
    SELECT loan_id FROM w
    """


async def plan_repayment_calls(
    session: AsyncSession, p: PolicyInForce, today: date, scope: Scope
) -> list[str]:
    """The calls of the approved repayment plans of `scope`'s loans (one statement); the
    loans whose call was opened or brought forward."""
    params = policy_params(p, today) | scope.params()
    return [r.loan_id for r in await session.execute(text(_plan_calls(scope)), params)]


async def replan_scope(
    session: AsyncSession, p: PolicyInForce, today: date, scope: Scope
) -> ReplanChanges:
    """Re-plan the loans of `scope` in the caller's transaction: the same statements
    whatever its size (three temporary tables, dropped at commit), never one per loan."""
    params = policy_params(p, today) | scope.params()
    loans = await session.execute(text(_tier_table(p, scope)), params)
    await session.execute(text(_plan_table(scope)), params)
    replanned = [r.loan_id for r in await session.execute(text(_replan_open(scope)), params)]
    await session.execute(
        text(
            "CREATE TEMP TABLE replan_opened (loan_id varchar, due_on date, created boolean)"
            " ON COMMIT DROP"
        )
    )
    try:
        async with session.begin_nested():
            await session.execute(text(_open_due_fast(scope)), params)
    except IntegrityError:
        await session.execute(text(_open_due(scope)), params)
    calls = await plan_repayment_calls(session, p, today, scope)
    settled = (
        await session.execute(text(_SETTLE_LOANS), {"exact": sorted({*replanned, *calls})})
    ).one()
    opened = (
        await session.execute(
            text(
                "SELECT count(*) FILTER (WHERE created) AS created,"
                " count(*) FILTER (WHERE NOT created) AS advanced FROM replan_opened"
            )
        )
    ).one()
    if opened.created or opened.advanced or calls:
        await repository.notify_dispatch(session)
    return ReplanChanges(
        loans=int(loans.rowcount),  # type: ignore[attr-defined]
        tiers_changed=int(settled.tiers),
        tasks_replanned=len(replanned),
        tasks_created=int(opened.created),
        tasks_advanced=int(opened.advanced),
        plan_calls=len(calls),
        next_due_changed=int(settled.next_due),
    )


async def _chunk_end(session: AsyncSession, after: str, size: int) -> str | None:
    """The last loan id of the chunk after `after` (None: no loans left); an index-only
    walk of the primary key."""
    found = await session.execute(
        text(
            "SELECT max(loan_id) FROM (SELECT loan_id FROM scheduler.loans"
            " WHERE loan_id > :after ORDER BY loan_id LIMIT :size) AS c"
        ),
        {"after": after, "size": size},
    )
    end: str | None = found.scalar_one()
    return end


async def replan_portfolio(
    sessions: async_sessionmaker[AsyncSession],
    *,
    today: date | None = None,
    region: str | None = None,
    chunk: int = CHUNK_LOANS,
    parallel: int = 2,
) -> tuple[int, ReplanChanges]:
    """Re-plan every loan (of `region`, if given), a chunk of loan ids per transaction,
    `parallel` chunks at a time (disjoint loan ranges: they never wait for each other), by
    the policy in force; (policy version, what changed), also kept in `replan_runs`."""
    today = today or datetime.now(UTC).date()
    started = datetime.now(UTC)
    async with unit_of_work(sessions) as session:
        p = await policies.current_policy(session)
        # The chunks' bounds: an index-only walk of the primary key.
        bounds: list[tuple[str | None, str]] = []
        after = ""  # loan ids are never empty
        while (end := await _chunk_end(session, after, chunk)) is not None:
            bounds.append((after or None, end))
            after = end
    total = ReplanChanges()
    slots = asyncio.Semaphore(max(parallel, 1))

    async def one(lo: str | None, hi: str) -> None:
        async with slots, unit_of_work(sessions) as session:
            total.add(await replan_scope(session, p, today, Scope(lo, hi, region=region)))

    async with asyncio.TaskGroup() as group:
        for lo, hi in bounds:
            group.create_task(one(lo, hi))
    async with unit_of_work(sessions) as session:
        await session.execute(
            text(
                "INSERT INTO scheduler.replan_runs"
                " (policy_version, run_on, started_at, finished_at, changes)"
                " VALUES (:v, :run_on, :started, now(), CAST(:changes AS jsonb))"
            ),
            {
                "v": p.version,
                "run_on": today,
                "started": started,
                "changes": json.dumps(asdict(total) | {"region": region}),
            },
        )
    return p.version, total


async def replan_due(session: AsyncSession, today: date, region: str | None = None) -> bool:
    """Whether the portfolio (`region`'s, if given) has not been re-planned today by the
    policy in force."""
    found = await session.execute(
        text(
            "SELECT NOT EXISTS (SELECT 1 FROM scheduler.replan_runs"
            " WHERE run_on = :today"
            " AND changes ->> 'region' IS NOT DISTINCT FROM CAST(:region AS text)"
            " AND policy_version = (SELECT max(version) FROM scheduler.policies))"
        ),
        {"today": today, "region": region},
    )
    return bool(found.scalar_one())


# One re-plan at a time across the worker's replicas: a session-level advisory lock held on
# a connection of its own, outside any transaction (a run is many transactions, longer than
# the idle-in-transaction limit).
_REPLAN_LOCK = "hashtext('scheduler.replan')"


def _today() -> date:
    return datetime.now(UTC).date()


def _plain_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def replan_turn(database_url: str, *, wait: bool) -> AsyncIterator[bool]:
    """The re-plan lock, held on a connection of its own for the block: whether we have it.
    `wait`: wait for a re-plan under way to finish (the command line); otherwise give up
    at once (the worker's check, which comes again)."""
    conn = await asyncpg.connect(_plain_dsn(database_url))
    try:
        if wait:
            await conn.execute(f"SELECT pg_advisory_lock({_REPLAN_LOCK})", timeout=None)
        elif not await conn.fetchval(f"SELECT pg_try_advisory_lock({_REPLAN_LOCK})"):
            yield False
            return
        try:
            yield True
        finally:
            await conn.execute(f"SELECT pg_advisory_unlock({_REPLAN_LOCK})")
    finally:
        await conn.close()


class DailyReplan:
    """The worker's re-plan: checks every `period_seconds` whether the portfolio has been
    re-planned today by the policy in force, and re-plans it if not; so once a day, and
    again as soon as a new policy version is installed.

    `clock` gives the day (the tests move it); `region` limits the runs to one region's
    loans (the tests', which share a database with others; the worker re-plans them all).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        database_url: str,
        *,
        period_seconds: float,
        chunk: int = CHUNK_LOANS,
        parallel: int = 2,
        clock: Callable[[], date] = _today,
        region: str | None = None,
    ) -> None:
        self._parallel = parallel
        self._clock = clock
        self._region = region
        self._sessions = sessions
        self._database_url = database_url
        self._period = period_seconds
        self._chunk = chunk

    async def run(self) -> None:
        if self._period <= 0:
            return
        while True:
            await asyncio.sleep(self._period)
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 - the next check retries
                log.warning("re-plan failed (%s); retrying later", type(exc).__name__)

    async def run_once(self) -> ReplanChanges | None:
        """Re-plan if due and no replica is at it; what changed (None: nothing ran)."""
        today = self._clock()
        async with unit_of_work(self._sessions) as session:
            await policies.current_policy(session)
            if not await replan_due(session, today, self._region):
                return None
        async with replan_turn(self._database_url, wait=False) as ours:
            if not ours:
                return None
            # Asked again under the lock: another replica may have just finished.
            async with unit_of_work(self._sessions) as session:
                if not await replan_due(session, today, self._region):
                    return None
            version, changes = await replan_portfolio(
                self._sessions,
                today=today,
                region=self._region,
                chunk=self._chunk,
                parallel=self._parallel,
            )
        log.info("re-planned the portfolio by policy %d: %s", version, asdict(changes))
        return changes


async def _main() -> int:
    settings = SchedulerSettings()
    engine = engine_for(settings)
    try:
        began = time.monotonic()
        # One re-plan at a time: a run the worker has under way is waited for, not doubled.
        async with replan_turn(settings.database_url, wait=True):
            version, changes = await replan_portfolio(
                make_session_factory(engine),
                chunk=settings.replan_chunk_loans,
                parallel=settings.replan_parallel,
            )
        # ru_maxrss is in KiB on Linux: the process's peak memory, for `make bench`.
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            json.dumps(
                {
                    "policy_version": version,
                    "seconds": round(time.monotonic() - began, 1),
                    "peak_rss_mib": round(peak_mib, 1),
                }
                | asdict(changes)
            )
        )
    finally:
        await engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
