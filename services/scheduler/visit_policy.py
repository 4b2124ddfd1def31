"""The visit policy as data: the pydantic model of `policy.yaml` and its versions.

A policy document is validated here before it is installed (`PUT /v1/policy`), so a policy
in the database is always one the planner can apply. The planner's pure functions
(`policy.py`) take a `PolicyInForce`: the document and the version it was installed as,
which every task's `reason` records.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.vocabulary import CreditGrade, RecommendedAction, Severity, VisitMethod

DEFAULT_POLICY_FILE = Path(__file__).with_name("policy.yaml")
# A human visit: what agents do. Third-party checks are the partners'.
HumanMethod = Literal[VisitMethod.PHONE, VisitMethod.FIELD]


class Tier(IntEnum):
    """A loan's risk tier, ordered: arithmetic on tiers is moving up and down."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def of(cls, label: str) -> Tier:
        return cls[label.upper()]


class BadFinding(StrEnum):
    """What a visit can find that counts against a loan (`policy.bad_findings`)."""

    VEHICLE_MISSING = "vehicle_missing"
    VEHICLE_DAMAGED = "vehicle_damaged"
    VEHICLE_LENT_OUT = "vehicle_lent_out"
    UNEMPLOYED = "unemployed"
    INCOME_DECREASED = "income_decreased"
    ENCUMBRANCE_DETECTED = "encumbrance_detected"
    DOCUMENTS_NOT_INTACT = "documents_not_intact"
    REPAYMENT_DIFFICULTY = "repayment_difficulty"


class ThirdPartyCheck(StrEnum):
    GPS_POSITION = "gps_position"
    RIDE_HAILING_REGISTRY = "ride_hailing_registry"
    CREDIT_BUREAU = "credit_bureau"


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VisitAsk(Rules):
    """A visit something asks for: by which method, within how many days."""

    method: HumanMethod
    within_days: int = Field(ge=0, le=365)


class FirstFollowUp(Rules):
    method: HumanMethod = VisitMethod.PHONE
    after_months: int = Field(default=1, ge=0, le=24)


class LtvBand(Rules):
    from_ratio: Decimal = Field(ge=0, le=100, max_digits=8, decimal_places=4)
    points: int = Field(ge=0, le=10)


class TermBand(Rules):
    from_months: int = Field(ge=0, le=120)
    points: int = Field(ge=0, le=10)


class RiskTierRules(Rules):
    grade_points: dict[CreditGrade, int] = Field(min_length=len(CreditGrade))
    ltv_bands: list[LtvBand] = Field(default_factory=list, max_length=10)
    remaining_term_bands: list[TermBand] = Field(default_factory=list, max_length=10)
    medium_from: int = Field(ge=0, le=100)
    high_from: int = Field(ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.high_from < self.medium_from:
            raise ValueError("high_from must be at least medium_from")
        if any(not 0 <= p <= 10 for p in self.grade_points.values()):
            raise ValueError("grade_points must be between 0 and 10")
        return self


class Cadence(Rules):
    contact_every_months: int = Field(ge=1, le=24)
    # The procedure: at least one field inspection a year for every loan.
    field_every_months: int = Field(ge=1, le=12)
    third_party_every_months: int = Field(ge=1, le=24)


class Tiers(Rules):
    high: Cadence
    medium: Cadence
    low: Cadence

    def of(self, tier: Tier) -> Cadence:
        cadence: Cadence = getattr(self, tier.label)
        return cadence

    @model_validator(mode="after")
    def _riskier_more_often(self) -> Self:
        # "More for high": a riskier tier is never seen less often than a safer one.
        for field in ("contact_every_months", "field_every_months", "third_party_every_months"):
            high, medium, low = (getattr(c, field) for c in (self.high, self.medium, self.low))
            if not high <= medium <= low:
                raise ValueError(f"{field} must not grow with risk (high <= medium <= low)")
        if self.high.field_every_months >= 12:
            raise ValueError("high tier needs more than one field inspection a year")
        return self


class Arrears(Rules):
    call_within_days: int = Field(ge=0, le=60)
    field_from_dpd: int = Field(ge=1, le=365)
    field_within_days: int = Field(ge=0, le=60)
    overdue_contact_every_days: int = Field(ge=1, le=90)
    unreachable_field_within_days: int = Field(ge=0, le=60)


class CleanRecord(Rules):
    on_time_installments: int = Field(ge=1, le=60)
    tiers_down: int = Field(ge=0, le=2)


class BadFindings(Rules):
    findings: list[BadFinding] = Field(max_length=len(BadFinding))
    tiers_up: int = Field(ge=0, le=2)
    visit: VisitAsk


class Alerts(Rules):
    tier_up_from_severity: Severity
    tiers_up: int = Field(ge=0, le=2)
    visits: dict[RecommendedAction, VisitAsk]


class Collateral(Rules):
    ltv_limit: Decimal = Field(gt=0, le=100, max_digits=8, decimal_places=4)
    tiers_up: int = Field(ge=0, le=2)
    review: VisitAsk


class RepaymentPlanCalls(Rules):
    """An approved repayment plan: a call this many days before each installment falls due,
    the next installment's at a time (one open task per loan and method)."""

    method: HumanMethod = VisitMethod.PHONE
    call_days_before: int = Field(default=2, ge=0, le=30)


class Planning(Rules):
    horizon_days: int = Field(ge=1, le=366)


class VisitPolicy(Rules):
    """The whole policy document (`policy.yaml`)."""

    first_follow_up: FirstFollowUp
    risk_tier: RiskTierRules
    tiers: Tiers
    third_party_checks: list[ThirdPartyCheck] = Field(min_length=1)
    arrears: Arrears
    clean_record: CleanRecord
    bad_findings: BadFindings
    alerts: Alerts
    collateral: Collateral
    planning: Planning
    # Versions installed before the section existed plan calls by the defaults.
    repayment_plans: RepaymentPlanCalls = Field(default_factory=RepaymentPlanCalls)


@dataclass(frozen=True)
class PolicyInForce:
    """A policy as installed: its rules and the version tasks record."""

    version: int
    rules: VisitPolicy


def parse_policy(document: str) -> VisitPolicy:
    """A YAML (or JSON, a subset of it) policy document, validated. ValueError when it does
    not parse; pydantic's ValidationError naming the field when it is not a valid policy."""
    try:
        loaded: Any = yaml.safe_load(document)
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML: {exc}") from None
    return VisitPolicy.model_validate(loaded)


def default_policy() -> VisitPolicy:
    """The lender's reviewed defaults, shipped as `policy.yaml`."""
    return parse_policy(DEFAULT_POLICY_FILE.read_text(encoding="utf-8"))
