"""Triage: what findings do to a loan's active alerts (pure, no database or broker)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.alerts import rules
from services.alerts.rules import Finding
from services.alerts.triage import AlertState, Triage
from shared.vocabulary import AlertStatus

RULES = rules.current()
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _arrears(dpd: int) -> Finding:
    bucket = [r for r in RULES.families["arrears"].rules if dpd >= r.params["min_dpd"]][-1]
    return Finding(bucket, f"{dpd} days past due", {"days_past_due": dpd})


def test_a_worse_bucket_escalates_the_open_alert_and_announces_it_again() -> None:
    triage = Triage([], RULES, NOW)
    first, worse = uuid.uuid4(), uuid.uuid4()
    triage.found("L-1", first, T0, _arrears(5))
    triage.found("L-1", worse, T0 + timedelta(days=90), _arrears(95))

    [alert] = triage.inserted
    assert (alert.rule, alert.severity, alert.recommended_action) == (
        "dpd_90",
        "critical",
        "legal_review",
    )
    assert alert.source_event_id == first and alert.occurrences == 2
    assert alert.facts == {"days_past_due": 95}
    assert [(e.alert_id, e.source_event_id, e.severity) for e in triage.announced] == [
        (alert.alert_id, first, "low"),
        (alert.alert_id, worse, "critical"),
    ]
    assert [h.action for h in triage.history] == ["raised", "escalated"]
    assert "dpd_1 → dpd_90 (low → critical)" in triage.history[1].note


def test_repeats_inside_the_window_are_counted_and_after_it_announced_again() -> None:
    triage = Triage([], RULES, NOW)
    triage.found("L-1", uuid.uuid4(), T0, _arrears(35))
    triage.found("L-1", uuid.uuid4(), T0 + timedelta(days=3), _arrears(38))
    triage.found("L-1", uuid.uuid4(), T0 + timedelta(days=4), _arrears(12))  # milder
    assert len(triage.announced) == 1 and triage.repeats == 2
    late = uuid.uuid4()
    triage.found("L-1", late, T0 + timedelta(days=7), _arrears(42))

    [alert] = triage.inserted
    assert alert.rule == "dpd_30" and alert.occurrences == 4
    assert alert.last_seen_at == T0 + timedelta(days=7)
    assert [e.source_event_id for e in triage.announced][1] == late
    assert [h.action for h in triage.history] == ["raised", "re_raised"]


def test_a_cure_resolves_the_loans_repayment_alerts_only_and_a_new_arrear_opens_anew() -> None:
    triage = Triage([], RULES, NOW)
    triage.found("L-1", uuid.uuid4(), T0, _arrears(35))
    unreachable = Finding(RULES.rule("borrower_unreachable"), "unreachable", {})
    triage.found("L-1", uuid.uuid4(), T0, unreachable)
    triage.found("L-2", uuid.uuid4(), T0, _arrears(35))
    cure = uuid.uuid4()
    triage.cure("L-1", cure, f"cured by posting {cure}")
    triage.found("L-1", uuid.uuid4(), T0 + timedelta(days=40), _arrears(3))

    by_loan = {(a.loan_id, a.family, a.status) for a in triage.inserted}
    assert by_loan == {
        ("L-1", "arrears", "resolved"),
        ("L-1", "arrears", "open"),
        ("L-1", "contact", "open"),
        ("L-2", "arrears", "open"),
    }
    [cured] = [a for a in triage.inserted if a.status == "resolved"]
    assert (cured.resolved_by, cured.resolution_action) == ("system", "cured")
    assert str(cure) in (cured.resolution_note or "")
    [entry] = [h for h in triage.history if h.action == "cured"]
    assert (entry.from_status, entry.to_status, entry.who) == ("open", "resolved", "system")


def _active(loan_id: str, finding: Finding, *, last_raised: datetime = T0) -> AlertState:
    """An alert a batch found active in the database."""
    rule = finding.rule
    return AlertState(
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
        rule_version=RULES.version,
        source_event_id=uuid.uuid4(),
        created_at=T0,
        occurrences=1,
        last_seen_at=last_raised,
        last_raised_at=last_raised,
        severity_since=T0,
    )


def test_an_alert_only_seen_again_is_counted_and_the_others_rewritten() -> None:
    """The worker writes a counted alert as its count and last sighting only: whatever
    else changes on an alert must put it among the rewritten."""
    seen, worse, late, cured = (_active(f"L-{n}", _arrears(35)) for n in range(4))
    triage = Triage([seen, worse, late, cured], RULES, NOW)
    triage.found("L-0", uuid.uuid4(), T0 + timedelta(days=2), _arrears(37))
    triage.found("L-1", uuid.uuid4(), T0 + timedelta(days=60), _arrears(95))
    triage.found("L-2", uuid.uuid4(), T0 + timedelta(days=8), _arrears(43))
    triage.cure("L-3", uuid.uuid4(), "cured")

    assert triage.counted == [seen]
    assert (seen.occurrences, seen.last_seen_at) == (2, T0 + timedelta(days=2))
    assert (seen.rule, seen.last_raised_at, seen.status) == ("dpd_30", T0, "open")
    assert {a.loan_id for a in triage.updated} == {"L-1", "L-2", "L-3"}
    assert (worse.rule, late.last_raised_at, cured.status) == (
        "dpd_90",
        T0 + timedelta(days=8),
        "resolved",
    )
    assert triage.inserted == []


def test_only_a_loan_with_an_active_repayment_alert_has_something_to_cure() -> None:
    unreachable = Finding(RULES.rule("borrower_unreachable"), "unreachable", {})
    triage = Triage([_active("L-1", _arrears(35)), _active("L-2", unreachable)], RULES, NOW)
    assert triage.has_repayment_alert("L-1")
    assert not triage.has_repayment_alert("L-2")  # a contact alert: no cure for it
    assert not triage.has_repayment_alert("L-3")
    triage.found("L-3", uuid.uuid4(), T0, _arrears(5))
    assert triage.has_repayment_alert("L-3")
    triage.cure("L-1", uuid.uuid4(), "cured")
    assert not triage.has_repayment_alert("L-1")
    triage.cure("L-2", uuid.uuid4(), "cured")
    assert triage.updated[0].loan_id == "L-1" and len(triage.updated) == 1
