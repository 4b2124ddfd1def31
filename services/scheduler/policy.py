"""Visit planning policy: pure functions, no I/O (unit-tested without a database).

Frequency follows the borrower's risk tier (credit grade) and repayment standing, as the
lender's procedure asks: high risk is visited more often, overdue loans sooner, and a clean
record less often.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from shared.vocabulary import SERIOUS_ARREARS_DPD

# Days between routine visits by credit grade: A/B months apart, D/E every few weeks.
ROUTINE_INTERVAL_DAYS: dict[str, int] = {"A": 180, "B": 120, "C": 60, "D": 30, "E": 14}
OVERDUE_INTERVAL_DAYS = 7
URGENT_CALL_DAYS = 2
FIELD_INSPECTION_DAYS = 7
# From the M1 bucket on, the car is inspected in the field.
FIELD_DPD_THRESHOLD = SERIOUS_ARREARS_DPD


@dataclass(frozen=True)
class PlannedVisit:
    method: str
    due_on: date
    rule: str
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> dict[str, Any]:
        """What a task shows as `reason`: the rule and the inputs that produced it."""
        return {"rule": self.rule, **self.inputs}


@dataclass(frozen=True)
class AgentLoad:
    agent_id: str
    open_tasks: int
    due_that_day: int
    daily_capacity: int


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def first_follow_up(disbursed_on: date) -> PlannedVisit:
    """The first follow-up: a phone visit one calendar month after disbursement."""
    return PlannedVisit(
        method="phone",
        due_on=add_months(disbursed_on, 1),
        rule="first_follow_up",
        inputs={"disbursed_on": disbursed_on.isoformat(), "offset": "1 month"},
    )


def next_routine_visit(
    *, visited_on: date, credit_grade: str, days_past_due: int, outcome: str
) -> PlannedVisit:
    """The next visit after one was completed, by risk tier and repayment standing."""
    interval = ROUTINE_INTERVAL_DAYS[credit_grade]
    rule = "routine_by_grade"
    method = "phone"
    if days_past_due > 0:
        interval, rule = min(interval, OVERDUE_INTERVAL_DAYS), "overdue_follow_up"
    if days_past_due >= FIELD_DPD_THRESHOLD:
        method = "field"
    if outcome in ("borrower_unreachable", "refused"):
        # A borrower who cannot be reached or refuses is seen in person, soon.
        interval, rule, method = min(interval, FIELD_INSPECTION_DAYS), f"after_{outcome}", "field"
    return PlannedVisit(
        method=method,
        due_on=visited_on + timedelta(days=interval),
        rule=rule,
        inputs={
            "credit_grade": credit_grade,
            "days_past_due": days_past_due,
            "last_outcome": outcome,
            "last_visit_on": visited_on.isoformat(),
            "interval_days": interval,
        },
    )


def visits_for_repayment(
    *, posted_on: date, status: str, days_past_due: int, installment_no: int
) -> list[PlannedVisit]:
    """A missed or partial installment: an urgent call, and at 30+ DPD a field inspection."""
    if status not in ("missed", "partial"):
        return []
    inputs = {
        "repayment_status": status,
        "days_past_due": days_past_due,
        "installment_no": installment_no,
    }
    visits = [
        PlannedVisit(
            "phone", posted_on + timedelta(days=URGENT_CALL_DAYS), f"{status}_payment_call", inputs
        )
    ]
    if days_past_due >= FIELD_DPD_THRESHOLD:
        visits.append(
            PlannedVisit(
                "field",
                posted_on + timedelta(days=FIELD_INSPECTION_DAYS),
                "dpd_30_field_inspection",
                inputs,
            )
        )
    return visits


def visit_for_alert(
    *, raised_on: date, recommended_action: str, rule: str, severity: str
) -> PlannedVisit | None:
    """Alerts that recommend a visit get one; others are for the risk desk alone."""
    days_by_action = {
        "phone_visit": ("phone", 2),
        "field_visit": ("field", 7),
        "repossession_review": ("field", 2),
    }
    if recommended_action not in days_by_action:
        return None
    method, days = days_by_action[recommended_action]
    return PlannedVisit(
        method,
        raised_on + timedelta(days=days),
        "alert_follow_up",
        {"alert_rule": rule, "severity": severity, "recommended_action": recommended_action},
    )


def merge_with_open_task(open_due_on: date | None, planned: PlannedVisit) -> str:
    """What to do with an open task of the same method: 'create', 'keep' or 'advance'.

    One open task per loan and method: a new plan never duplicates it, it can only
    bring it forward.
    """
    if open_due_on is None:
        return "create"
    return "keep" if open_due_on <= planned.due_on else "advance"


def choose_agent(candidates: Sequence[AgentLoad]) -> str | None:
    """Fewest open tasks wins; agents already full on the due day come last."""
    if not candidates:
        return None
    best = min(
        candidates,
        key=lambda a: (a.due_that_day >= a.daily_capacity, a.open_tasks, a.agent_id),
    )
    return best.agent_id
