"""What a candidate visit policy would ask of the field: `POST /v1/policy/simulate`.

The candidate's routine plan (replan.py's rules: tier, contact, field inspection, third-party
check) is projected over the next 90 days for the whole portfolio in two read-only
statements, and set against the agents' capacity (daily capacity on the days they work and
are not absent), per ISO week and region. Nothing is written.

It is a projection, not a forecast: a visit already overdue is counted in the first week and
its cadence runs on from today;
the arrears, alerts and findings that will add visits cannot be known in advance.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler.replan import TIER_OF_SQL, points_sql, policy_params
from services.scheduler.visit_policy import PolicyInForce

HORIZON_DAYS = 90
HUMAN = ("phone", "field")


class WeekLoad(BaseModel):
    week: date = Field(description="Monday of the ISO week.")
    region: str
    method: str
    visits: int


class WeekCapacity(BaseModel):
    week: date
    region: str
    demand: int = Field(description="Phone and field visits the policy asks for that week.")
    capacity: int = Field(description="Agents' visits: daily capacity on days they work.")
    shortfall: int = Field(description="Demand beyond capacity (0: it fits).")


class Simulation(BaseModel):
    from_day: date
    to_day: date
    loans: int
    load: list[WeekLoad] = Field(description="Visits by week, region and method.")
    capacity: list[WeekCapacity] = Field(description="Human visits against agents, by week.")
    over_capacity: list[WeekCapacity] = Field(description="The weeks and regions that do not fit.")


def _load_sql(p: PolicyInForce) -> str:
    return f"""
    WITH f AS (
        SELECT l.region, l.disbursed_on, l.last_visit_on, l.last_field_on,
               l.last_third_party_on, l.tier_shift, {points_sql(p)} AS points
        FROM scheduler.loans AS l
    ), t AS (
        SELECT f.*, array_position(CAST(:tiers AS varchar[]), {TIER_OF_SQL}) AS i FROM f
    ), firsts AS (
        SELECT t.region, m.method, m.first_due, m.every
        FROM t CROSS JOIN LATERAL (VALUES
            ('phone',
             CASE WHEN t.last_visit_on IS NULL
                  THEN (t.disbursed_on + make_interval(months => CAST(:first_months AS int)))::date
                  ELSE (t.last_visit_on
                        + make_interval(months => (CAST(:contact_months AS int[]))[t.i]))::date
             END,
             (CAST(:contact_months AS int[]))[t.i]),
            ('field',
             (COALESCE(t.last_field_on, t.disbursed_on)
              + make_interval(months => (CAST(:field_months AS int[]))[t.i]))::date,
             (CAST(:field_months AS int[]))[t.i]),
            ('third_party',
             (COALESCE(t.last_third_party_on, t.disbursed_on)
              + make_interval(months => (CAST(:third_party_months AS int[]))[t.i]))::date,
             (CAST(:third_party_months AS int[]))[t.i])
        ) AS m(method, first_due, every)
    ), visits AS (
        -- An overdue visit is made now, and the cadence runs on from then.
        SELECT x.region, x.method, x.due
        FROM (SELECT firsts.region, firsts.method,
                     (GREATEST(firsts.first_due, CAST(:today AS date))
                      + make_interval(months => firsts.every * k))::date AS due
              FROM firsts CROSS JOIN generate_series(0, 3) AS k) AS x
        WHERE x.due <= CAST(:to_day AS date)
    )
    SELECT CAST(date_trunc('week', due) AS date) AS week, region, method, count(*) AS visits,
           (SELECT count(*) FROM scheduler.loans) AS loans
    FROM visits GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    """


_CAPACITY = text(
    """
    SELECT CAST(date_trunc('week', d.day) AS date) AS week, a.region,
           sum(a.daily_capacity) AS capacity
    FROM scheduler.agents AS a
    CROSS JOIN LATERAL (SELECT CAST(g AS date) AS day FROM generate_series(
        CAST(:today AS date), CAST(:to_day AS date), interval '1 day') AS g) AS d
    WHERE a.active AND CAST(extract(isodow FROM d.day) AS smallint) = ANY(a.working_days)
      AND NOT EXISTS (SELECT 1 FROM scheduler.agent_absences AS b
                      WHERE b.agent_id = a.agent_id AND d.day BETWEEN b.starts_on AND b.ends_on)
    GROUP BY 1, 2
    """
)


async def simulate(session: AsyncSession, candidate: PolicyInForce, today: date) -> Simulation:
    """The candidate's 90-day load on the portfolio and the agents, read-only."""
    to_day = today + timedelta(days=HORIZON_DAYS - 1)
    params: dict[str, Any] = policy_params(candidate, today) | {"to_day": to_day}
    rows = (await session.execute(text(_load_sql(candidate)), params)).all()
    load = [WeekLoad(week=r.week, region=r.region, method=r.method, visits=r.visits) for r in rows]
    capacity = {
        (r.week, r.region): int(r.capacity)
        for r in await session.execute(_CAPACITY, {"today": today, "to_day": to_day})
    }
    demand: dict[tuple[date, str], int] = {}
    for week in load:
        if week.method in HUMAN:
            key = (week.week, week.region)
            demand[key] = demand.get(key, 0) + week.visits
    fits = [
        WeekCapacity(
            week=week,
            region=region,
            demand=demand.get((week, region), 0),
            capacity=capacity.get((week, region), 0),
            shortfall=max(demand.get((week, region), 0) - capacity.get((week, region), 0), 0),
        )
        for week, region in sorted({*demand, *capacity})
    ]
    return Simulation(
        from_day=today,
        to_day=to_day,
        loans=int(rows[0].loans) if rows else 0,
        load=load,
        capacity=fits,
        over_capacity=[f for f in fits if f.shortfall > 0],
    )
