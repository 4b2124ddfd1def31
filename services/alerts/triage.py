"""What a batch's findings do to the loans' open alerts: pure, no I/O.

The rules say what an event shows; triage decides what the desk sees. A loan has at most
one open alert per rule family: a first finding opens it, a worse one escalates it (same
alert, severity up, announced again with the escalating event), the same or a milder one is
counted on it (announced again only once its family's suppression window has passed since
the last announcement), and a cure closes the loan's open repayment alerts. Times compare
event times (`occurred_at`), so a replay decides exactly as the first pass did.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from services.alerts.rules import SEVERITY_RANK, Finding, RuleSet
from shared.events import AlertRaised
from shared.vocabulary import AlertStatus, Category, RecommendedAction, Severity

# Who the service records as the actor of what it does by itself.
SYSTEM = "system"
CURED = "cured"
# Open, in the sense of the one-open-alert-per-family rule: not yet resolved or dismissed.
ACTIVE: tuple[AlertStatus, ...] = (
    AlertStatus.OPEN,
    AlertStatus.ACKNOWLEDGED,
    AlertStatus.IN_PROGRESS,
)


@dataclass
class AlertState:
    """An alert as a batch works on it (a row of alerts.alerts)."""

    alert_id: uuid.UUID
    loan_id: str
    family: str
    rule: str
    category: Category
    severity: Severity
    recommended_action: RecommendedAction
    status: AlertStatus
    reason: str
    facts: Mapping[str, Any]
    rule_version: int | None
    source_event_id: uuid.UUID
    created_at: datetime
    occurrences: int
    last_seen_at: datetime
    last_raised_at: datetime
    # Processing time, not event time: the desk's acknowledgement deadline counts from it.
    severity_since: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution_action: str | None = None
    resolution_note: str | None = None
    # Inserted by this batch (else updated when `changed`; only its count and last
    # sighting changed unless `rewritten`: escalated, announced again or cured).
    new: bool = False
    changed: bool = False
    rewritten: bool = False


@dataclass(frozen=True)
class HistoryEntry:
    """A line of an alert's history (alerts.alert_history)."""

    alert_id: uuid.UUID
    at: datetime
    who: str
    action: str
    from_status: str | None
    to_status: str
    severity: str
    note: str
    source_event_id: uuid.UUID | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


class Triage:
    """The decisions of one batch, applied in the events' order."""

    def __init__(self, active: Iterable[AlertState], ruleset: RuleSet, now: datetime) -> None:
        self._ruleset = ruleset
        self._now = now
        self._open: dict[tuple[str, str], AlertState] = {}
        # The newest active alert of a family wins should old data hold two.
        for alert in sorted(active, key=lambda a: a.created_at):
            self._open[(alert.loan_id, alert.family)] = alert
        # Loans with an active alert: most postings of a month end cure a loan that has
        # none, and that is answered without looking at every family.
        self._loans_open = Counter(loan_id for loan_id, _ in self._open)
        self._touched: dict[uuid.UUID, AlertState] = {}
        self.history: list[HistoryEntry] = []
        self.announced: list[AlertRaised] = []
        self.repeats = 0

    # --- results --------------------------------------------------------------------------

    @property
    def inserted(self) -> list[AlertState]:
        return [a for a in self._touched.values() if a.new]

    @property
    def updated(self) -> list[AlertState]:
        """Active alerts the batch rewrote (escalated, announced again, cured)."""
        return [a for a in self._touched.values() if a.rewritten and not a.new]

    @property
    def counted(self) -> list[AlertState]:
        """Active alerts the batch only saw again: their count and last sighting changed,
        nothing else (most of a month end's findings on a loan already in arrears)."""
        return [a for a in self._touched.values() if a.changed and not a.rewritten and not a.new]

    # --- decisions ------------------------------------------------------------------------

    def found(
        self, loan_id: str, event_id: uuid.UUID, occurred_at: datetime, finding: Finding
    ) -> None:
        rule = finding.rule
        alert = self._open.get((loan_id, rule.family))
        if alert is None:
            self._open_alert(loan_id, event_id, occurred_at, finding)
            return
        alert.occurrences += 1
        alert.last_seen_at = max(alert.last_seen_at, occurred_at)
        self._touch(alert)
        if rule.rank > self._rank(alert.rule):
            self._escalate(alert, event_id, occurred_at, finding)
            return
        suppress = self._ruleset.families[rule.family].suppress
        if occurred_at - alert.last_raised_at >= suppress:
            # Still there after the window: the desk is told again, the alert is the same.
            alert.last_raised_at = occurred_at
            alert.rewritten = True
            days = int(suppress / timedelta(days=1))
            note = f"seen again after {days} days of suppression ({alert.occurrences} times)"
            self._record(alert, "re_raised", alert.status, note, event_id, finding)
            self._announce(alert, event_id)
        else:
            self.repeats += 1

    def has_repayment_alert(self, loan_id: str) -> bool:
        """Whether the loan has an active repayment alert (one a cure would resolve)."""
        if not self._loans_open[loan_id]:
            return False
        return any(
            alert.category == Category.REPAYMENT
            for family in self._ruleset.families
            if (alert := self._open.get((loan_id, family))) is not None
        )

    def cure(self, loan_id: str, event_id: uuid.UUID, note: str) -> None:
        """Resolve the loan's active repayment alerts: the loan is current again."""
        if not self._loans_open[loan_id]:
            return
        # The loan's alerts are found by family (a handful), not by walking every open
        # alert of the batch for each paid posting.
        for family in self._ruleset.families:
            key = (loan_id, family)
            alert = self._open.get(key)
            if alert is None or alert.category != Category.REPAYMENT:
                continue
            before = alert.status
            alert.status = AlertStatus.RESOLVED
            alert.resolved_at = self._now
            alert.resolved_by = SYSTEM
            alert.resolution_action = CURED
            alert.resolution_note = note
            alert.rewritten = True
            self._touch(alert)
            del self._open[key]
            self._loans_open[loan_id] -= 1
            self.history.append(
                HistoryEntry(
                    alert.alert_id,
                    self._now,
                    SYSTEM,
                    CURED,
                    before,
                    AlertStatus.RESOLVED,
                    alert.severity,
                    note,
                    event_id,
                )
            )

    # --- steps ----------------------------------------------------------------------------

    def _open_alert(
        self, loan_id: str, event_id: uuid.UUID, occurred_at: datetime, finding: Finding
    ) -> None:
        rule = finding.rule
        # Alerts of one batch list in the order they were raised (a microsecond apart).
        created = self._now + timedelta(microseconds=len(self._touched))
        alert = AlertState(
            alert_id=uuid.uuid4(),
            loan_id=loan_id,
            family=rule.family,
            rule=rule.code,
            category=rule.category,
            severity=rule.severity,
            recommended_action=rule.action,
            status=AlertStatus.OPEN,
            reason=finding.reason,
            facts=dict(finding.facts),
            rule_version=self._ruleset.version,
            source_event_id=event_id,
            created_at=created,
            occurrences=1,
            last_seen_at=occurred_at,
            last_raised_at=occurred_at,
            severity_since=self._now,
            new=True,
        )
        self._open[(loan_id, rule.family)] = alert
        self._loans_open[loan_id] += 1
        self._touched[alert.alert_id] = alert
        self._record(alert, "raised", None, finding.reason, event_id, finding)
        self._announce(alert, event_id)

    def _escalate(
        self, alert: AlertState, event_id: uuid.UUID, occurred_at: datetime, finding: Finding
    ) -> None:
        rule = finding.rule
        before = replace(alert)
        alert.rule = rule.code
        severity = max(alert.severity, rule.severity, key=SEVERITY_RANK.__getitem__)
        if severity != alert.severity:
            alert.severity_since = self._now
        alert.severity = severity
        alert.recommended_action = rule.action
        alert.reason = finding.reason
        alert.facts = dict(finding.facts)
        alert.rule_version = self._ruleset.version
        alert.last_raised_at = occurred_at
        alert.rewritten = True
        note = f"escalated {before.rule} → {rule.code} ({before.severity} → {alert.severity})"
        self._record(alert, "escalated", alert.status, note, event_id, finding)
        self._announce(alert, event_id)

    def _rank(self, code: str) -> int:
        try:
            return self._ruleset.rule(code).rank
        except KeyError:  # a rule of an older rule set: any current finding is news
            return -1

    def _touch(self, alert: AlertState) -> None:
        alert.changed = True
        self._touched[alert.alert_id] = alert

    def _record(
        self,
        alert: AlertState,
        action: str,
        from_status: str | None,
        note: str,
        event_id: uuid.UUID,
        finding: Finding,
    ) -> None:
        detail = {"rule": finding.rule.code, "rule_version": self._ruleset.version}
        self.history.append(
            HistoryEntry(
                alert.alert_id,
                self._now,
                SYSTEM,
                action,
                from_status,
                alert.status,
                alert.severity,
                note,
                event_id,
                {**detail, "facts": dict(finding.facts)},
            )
        )

    def _announce(self, alert: AlertState, event_id: uuid.UUID) -> None:
        self.announced.append(
            AlertRaised(
                loan_id=alert.loan_id,
                alert_id=alert.alert_id,
                source_event_id=event_id,
                rule=alert.rule,
                category=alert.category,
                severity=alert.severity,
                reason=alert.reason,
                recommended_action=alert.recommended_action,
            )
        )
