"""Alert rules: pure functions, no I/O beyond reading the rules file (unit-tested without a
database or a broker).

The thresholds, severities, recommended actions and suppression windows are data, in the
reviewed `rules.yaml` with its version; what each rule code checks is here. A rule sees the
event and the loan's story as the alerts service remembers it (earlier postings, earlier
visits), and says what it found and on which facts.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache, cached_property
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from shared.events import RepaymentPosted, VisitCompleted
from shared.vocabulary import (
    AgreedUsage,
    Category,
    EmploymentStatus,
    IncomeChange,
    RecommendedAction,
    RepaymentStatus,
    Severity,
    VehicleCondition,
    VehicleUsage,
    VisitOutcome,
)

RULES_FILE = Path(__file__).with_name("rules.yaml")

SEVERITY_RANK: Mapping[Severity, int] = {severity: i for i, severity in enumerate(Severity)}


class RuleSetError(ValueError):
    """The rules file does not describe a rule set this code can run."""


@dataclass(frozen=True)
class Rule:
    code: str
    family: str
    category: Category
    severity: Severity
    action: RecommendedAction
    # Place in its family, mildest first: a finding of a higher rank escalates.
    rank: int
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    name: str
    category: Category
    suppress: timedelta
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class RuleSet:
    version: int
    digest: str
    body: Mapping[str, Any]
    families: Mapping[str, Family]

    def rule(self, code: str) -> Rule:
        return self._by_code[code]

    @cached_property
    def arrears_buckets(self) -> tuple[tuple[int, Rule], ...]:
        """The arrears rules with their minimum days past due, mildest first (every
        posting is put in its bucket: read once, not per posting)."""
        return tuple((int(rule.params["min_dpd"]), rule) for rule in self.families["arrears"].rules)

    @cached_property
    def _by_code(self) -> Mapping[str, Rule]:
        # Looked up several times per event: a dict, not a walk over every family.
        return {rule.code: rule for family in self.families.values() for rule in family.rules}


@dataclass(frozen=True)
class KnownLoan:
    """What the rules know of a loan, from its `loan-registered` facts."""

    agreed_usage: AgreedUsage


class PostingMemo(NamedTuple):
    """A posting the service has applied, as the rules remember it. A tuple: a batch
    builds thousands from the memory it reads back, and a frozen dataclass costs five
    times as much to build."""

    event_id: uuid.UUID
    installment_no: int
    status: RepaymentStatus
    days_past_due: int
    amount_due: str
    amount_paid: str


@dataclass(frozen=True)
class VisitMemo:
    """A visit the service has applied, as the rules remember it."""

    event_id: uuid.UUID
    # The visit a correction stands for: its task, else its own visit id (contract: a
    # correction is a visit of its own carrying the corrected version's task_id).
    occasion: str
    outcome: VisitOutcome
    ended_at: datetime


@dataclass(frozen=True)
class Finding:
    """What one rule found in one event: the rule and the facts that fired it."""

    rule: Rule
    reason: str
    facts: Mapping[str, Any]


# --- the rule set -------------------------------------------------------------------------


def parse_rule_set(text: str) -> RuleSet:
    """The rule set a rules file describes; every rule code must have its check here and
    every check its rule, so a typo in the file fails at load, not at 3 a.m."""
    body = yaml.safe_load(text)
    try:
        version = int(body["version"])
        families: dict[str, Family] = {}
        for name, raw in body["families"].items():
            category = Category(raw["category"])
            rules = tuple(
                Rule(
                    code=str(item["code"]),
                    family=str(name),
                    category=category,
                    severity=Severity(item["severity"]),
                    action=RecommendedAction(item["action"]),
                    rank=rank,
                    params=dict(item.get("params") or {}),
                )
                for rank, item in enumerate(raw["rules"])
            )
            families[str(name)] = Family(
                str(name), category, timedelta(days=float(raw["suppress_days"])), rules
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise RuleSetError(f"rules file is malformed: {exc!r}") from exc
    codes = [rule.code for family in families.values() for rule in family.rules]
    if len(codes) != len(set(codes)):
        raise RuleSetError("a rule code appears twice")
    if set(codes) != set(CHECKS):
        raise RuleSetError(
            f"rules without a check: {sorted(set(codes) - set(CHECKS))}; "
            f"checks without a rule: {sorted(set(CHECKS) - set(codes))}"
        )
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return RuleSet(version, digest, body, families)


@cache
def current() -> RuleSet:
    """The rule set of the reviewed file this code ships with (read once per process)."""
    return parse_rule_set(RULES_FILE.read_text())


# --- repayment rules ----------------------------------------------------------------------


def _posting_facts(posting: RepaymentPosted) -> dict[str, Any]:
    return {
        "installment_no": posting.installment_no,
        "status": str(posting.status),
        "days_past_due": posting.days_past_due,
        "amount_due": str(posting.amount_due),
        "amount_paid": str(posting.amount_paid),
        "due_date": posting.due_date.isoformat(),
    }


def _posting_reason(posting: RepaymentPosted) -> str:
    return (
        f"installment {posting.installment_no} {posting.status}: "
        f"due {posting.amount_due} CNY, paid {posting.amount_paid} CNY; "
        f"loan {posting.days_past_due} days past due"
    )


def cures(posting: RepaymentPosted) -> bool:
    """A posting that brings the loan back to current: paid, nothing past due."""
    return posting.status == RepaymentStatus.PAID and posting.days_past_due == 0


def reads_story(posting: RepaymentPosted) -> bool:
    """Whether what a posting shows depends on the loan's earlier postings: only a miss
    does (a run of misses); every other repayment rule looks at the posting alone. Most
    postings of a month end are paid, so most need no story read back."""
    return posting.status == RepaymentStatus.MISSED


def repayment_findings(
    posting: RepaymentPosted, earlier: Sequence[PostingMemo], ruleset: RuleSet
) -> list[Finding]:
    """What a posting shows, given the loan's earlier postings (oldest first; only looked
    at when `reads_story`): at most one finding per family (its worst rule)."""
    fired: list[Rule] = []
    dpd = posting.days_past_due
    arrears = [rule for min_dpd, rule in ruleset.arrears_buckets if dpd >= min_dpd]
    if arrears and not cures(posting):
        fired.append(arrears[-1])
    if posting.status == RepaymentStatus.PARTIAL:
        fired.append(ruleset.rule("partial_payment"))
    if posting.status == RepaymentStatus.REVERSED:
        fired.append(ruleset.rule("payment_reversed"))
    missed = _missed_run(posting, earlier, ruleset)
    if not fired and missed is None:
        return []  # most postings (paid on time): no facts or reason written

    facts = _posting_facts(posting)
    reason = _posting_reason(posting)
    found = [Finding(rule, reason, facts) for rule in fired]
    if missed is not None:
        found.append(
            Finding(
                ruleset.rule("missed_consecutive"),
                f"installments {', '.join(map(str, missed))} missed in a row; {reason}",
                {**facts, "missed_installments": missed},
            )
        )
    return found


def _missed_run(
    posting: RepaymentPosted, earlier: Sequence[PostingMemo], ruleset: RuleSet
) -> list[int] | None:
    """The installments missed in a row up to this posting, if it completes a run."""
    if not reads_story(posting):
        return None
    needed = int(ruleset.rule("missed_consecutive").params["consecutive"])
    # The latest status of each installment (a later posting of one replaces it).
    latest = {memo.installment_no: memo.status for memo in earlier}
    run = [posting.installment_no - back for back in range(1, needed)]
    if all(latest.get(no) == RepaymentStatus.MISSED for no in run):
        return sorted([*run, posting.installment_no])
    return None


# --- visit rules --------------------------------------------------------------------------


def occasion(visit: VisitCompleted) -> str:
    """What makes two visit events one visit: a correction carries its task."""
    return str(visit.task_id or visit.visit_id)


VisitCheck = Callable[[VisitCompleted], bool]

# The findings rules that need nothing but the visit itself: code, check, reason.
_VISIT_CHECKS: tuple[tuple[str, VisitCheck, str], ...] = (
    (
        "collateral_encumbered",
        lambda v: v.findings.encumbrance_detected,
        "vehicle is pledged, sold or transferred to a third party",
    ),
    (
        "vehicle_missing",
        lambda v: v.findings.vehicle_condition == VehicleCondition.MISSING,
        "vehicle could not be found",
    ),
    (
        "vehicle_damaged",
        lambda v: v.findings.vehicle_condition == VehicleCondition.DAMAGED,
        "vehicle is damaged",
    ),
    (
        # None means the documents were not checked; only a definite "no" is a breach.
        "documents_not_intact",
        lambda v: v.findings.collateral_documents_intact is False,
        "vehicle registration or loan documents are not intact",
    ),
    (
        "visit_refused",
        lambda v: v.outcome == VisitOutcome.REFUSED,
        "borrower refused the visit",
    ),
)


def _capacity(visit: VisitCompleted, ruleset: RuleSet) -> Finding | None:
    """The borrower's capacity to pay, worst sign first."""
    findings = visit.findings
    lost = findings.employment_status == EmploymentStatus.UNEMPLOYED
    down = findings.income_change == IncomeChange.DECREASED
    facts = {
        "employment_status": str(findings.employment_status),
        "income_change": str(findings.income_change),
        "repayment_difficulty": findings.repayment_difficulty,
    }
    if (lost or down) and findings.repayment_difficulty:
        cause = "lost their job" if lost else "has less income"
        reason = f"borrower {cause} and reports difficulty repaying"
        return Finding(ruleset.rule("income_loss_with_difficulty"), reason, facts)
    if lost:
        return Finding(ruleset.rule("borrower_unemployed"), "borrower is unemployed", facts)
    if findings.repayment_difficulty:
        reason = "borrower reports difficulty repaying"
        return Finding(ruleset.rule("repayment_difficulty"), reason, facts)
    return None


def _unreachable(
    visit: VisitCompleted, earlier: Sequence[VisitMemo], ruleset: RuleSet
) -> Finding | None:
    if visit.outcome != VisitOutcome.BORROWER_UNREACHABLE:
        return None
    repeated = ruleset.rule("unreachable_repeated")
    window = timedelta(days=float(repeated.params["window_days"]))
    since = visit.ended_at - window
    occasions = {
        memo.occasion
        for memo in earlier
        if memo.outcome == VisitOutcome.BORROWER_UNREACHABLE and since < memo.ended_at
    } | {occasion(visit)}
    if len(occasions) >= int(repeated.params["times"]):
        days = window.days
        reason = f"borrower unreachable on {len(occasions)} visits in {days} days"
        facts = {"unreachable_visits": len(occasions), "window_days": days}
        return Finding(repeated, reason, facts)
    return Finding(
        ruleset.rule("borrower_unreachable"),
        "borrower could not be reached for the visit",
        {"unreachable_visits": len(occasions)},
    )


def visit_findings(
    visit: VisitCompleted,
    agreed_usage: AgreedUsage | None,
    earlier: Sequence[VisitMemo],
    ruleset: RuleSet,
) -> list[Finding]:
    """Every bad sign a visit found, at most one per family, given the loan's earlier
    visits. `agreed_usage` None (not known) skips only the misuse rule."""
    found: list[Finding] = []
    usage = visit.findings.vehicle_usage
    # Two vocabularies (what was agreed, what was seen) that share their values.
    if (
        agreed_usage is not None
        and usage != VehicleUsage.UNKNOWN
        and usage.value != agreed_usage.value
    ):
        found.append(
            Finding(
                ruleset.rule("vehicle_misuse"),
                f"vehicle used as {usage}; the loan agreed {agreed_usage} use",
                {"vehicle_usage": str(usage), "agreed_usage": str(agreed_usage)},
            )
        )
    base = {"visit_id": str(visit.visit_id), "outcome": str(visit.outcome)}
    for code, applies, reason in _VISIT_CHECKS:
        if applies(visit):
            found.append(Finding(ruleset.rule(code), reason, base))
    for extra in (_capacity(visit, ruleset), _unreachable(visit, earlier, ruleset)):
        if extra is not None:
            found.append(Finding(extra.rule, extra.reason, {**base, **extra.facts}))
    return found


# Every rule code the file may name, and so every code a check above raises.
CHECKS: frozenset[str] = frozenset(
    {
        "dpd_1",
        "dpd_30",
        "dpd_60",
        "dpd_90",
        "partial_payment",
        "missed_consecutive",
        "payment_reversed",
        "borrower_unreachable",
        "unreachable_repeated",
        "visit_refused",
        "repayment_difficulty",
        "borrower_unemployed",
        "income_loss_with_difficulty",
        "vehicle_misuse",
        "vehicle_damaged",
        "documents_not_intact",
        "vehicle_missing",
        "collateral_encumbered",
    }
)
