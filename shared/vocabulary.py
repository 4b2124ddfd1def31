"""The lender's follow-up vocabulary, one definition for events, tables, REST schemas, the
planning policy and the alert rules.

Each is a `StrEnum`: its members are plain strings on the wire and in the database, and a
misspelt value is a type error in Python and a CHECK violation in PostgreSQL
(`check_in` renders the constraint from the same enum, so the two cannot drift).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class RepaymentStatus(StrEnum):
    PAID = "paid"
    PARTIAL = "partial"
    MISSED = "missed"
    REVERSED = "reversed"


class VisitMethod(StrEnum):
    PHONE = "phone"
    FIELD = "field"
    THIRD_PARTY = "third_party"


class VisitOutcome(StrEnum):
    COMPLETED = "completed"
    BORROWER_UNREACHABLE = "borrower_unreachable"
    REFUSED = "refused"


class TaskStatus(StrEnum):
    OPEN = "open"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class CreditGrade(StrEnum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"


class AgreedUsage(StrEnum):
    """What the loan contract allows the car to be used for."""

    PRIVATE = "private"
    COMMERCIAL = "commercial"
    RIDE_HAILING = "ride_hailing"


class VehicleUsage(StrEnum):
    """What a visit saw the car used for."""

    PRIVATE = "private"
    COMMERCIAL = "commercial"
    RIDE_HAILING = "ride_hailing"
    LENT_OUT = "lent_out"
    UNKNOWN = "unknown"


class VehicleCondition(StrEnum):
    GOOD = "good"
    DAMAGED = "damaged"
    MISSING = "missing"
    UNKNOWN = "unknown"


class EmploymentStatus(StrEnum):
    STABLE = "stable"
    CHANGED = "changed"
    UNEMPLOYED = "unemployed"
    UNKNOWN = "unknown"


class IncomeChange(StrEnum):
    SAME = "same"
    INCREASED = "increased"
    DECREASED = "decreased"
    UNKNOWN = "unknown"


class Category(StrEnum):
    """What an alert is about."""

    REPAYMENT = "repayment"
    VEHICLE = "vehicle"
    COLLATERAL = "collateral"
    BORROWER = "borrower"
    CONTACT = "contact"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class RecommendedAction(StrEnum):
    """What the risk desk is advised to do about an alert."""

    PHONE_VISIT = "phone_visit"
    FIELD_VISIT = "field_visit"
    REPAYMENT_PLAN = "repayment_plan"
    LEGAL_REVIEW = "legal_review"
    REPOSSESSION_REVIEW = "repossession_review"


class AlertStatus(StrEnum):
    """Where an alert stands on the risk desk (the transitions are the alerts service's)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"


# Days past due at which arrears escalate, the lender's M1 and M3 buckets: from 30 a field
# inspection and a repayment plan, from 90 a legal review. The planning policy and the
# alert rules both read these, so the desk and the field never disagree on a bucket.
SERIOUS_ARREARS_DPD: Final = 30
DEFAULT_DPD: Final = 90


def check_in(column: str, values: type[StrEnum]) -> str:
    """The body of a CHECK constraint allowing exactly the members of `values`."""
    allowed = ", ".join(f"'{member.value}'" for member in values)
    return f"{column} IN ({allowed})"
