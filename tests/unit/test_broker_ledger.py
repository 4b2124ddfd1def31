"""Noticing a lost broker log from offsets alone (shared/broker_ledger.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.broker_ledger import BrokerLedger, Mark, consumer_role, relay_role

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def test_offsets_at_or_above_the_mark_are_no_loss() -> None:
    ledger = BrokerLedger(consumer_role("scheduler"), "consumer")
    assert ledger.check("repayment-posted", 0, 0) is None  # nothing known yet
    ledger.advance("repayment-posted", 0, 120, T0)
    assert ledger.check("repayment-posted", 0, 120) is None  # redelivery from the commit
    assert ledger.check("repayment-posted", 0, 500) is None


def test_a_log_below_the_commits_is_a_loss_reported_once() -> None:
    ledger = BrokerLedger(consumer_role("scheduler"), "consumer")
    ledger.advance("visit-completed", 1, 120, T0)
    loss = ledger.check("visit-completed", 1, 0)
    assert loss is not None
    assert (loss.topic, loss.partition, loss.expected_offset, loss.found_offset) == (
        "visit-completed",
        1,
        120,
        0,
    )
    assert loss.lost_since == T0  # the time of the last record the group applied
    assert ledger.check("visit-completed", 1, 0) is None  # the mark restarted with the log
    assert ledger.check("visit-completed", 1, 1) is None
    remedy = loss.remedy("scheduler")
    assert "python -m shared.ops republish --service visits --since 2026-11-30T09:59:00+00:00" in (
        remedy
    )
    assert remedy.endswith("python -m shared.ops ack-loss --service scheduler")
    assert "visit-completed partition 1" in loss.describe()


def test_lost_postings_are_asked_of_core_banking() -> None:
    ledger = BrokerLedger(consumer_role("alerts"), "consumer")
    ledger.advance("repayment-posted", 2, 7, T0)
    loss = ledger.check("repayment-posted", 2, 3, reset_to=0)
    assert loss is not None and "core banking" in loss.remedy("alerts")
    assert ledger.marks[("repayment-posted", 2)].next_offset == 0


def test_a_relay_republishes_its_own_outbox_from_when_it_first_saw_the_log() -> None:
    ledger = BrokerLedger(relay_role("alerts.outbox"), "relay")
    ledger.merge({("alert-raised", 0): Mark(40, since=T0, record_at=T0 + timedelta(hours=2))})
    loss = ledger.check("alert-raised", 0, 0)
    assert loss is not None and loss.lost_since == T0
    assert "republish --service alerts --since 2026-11-30T09:59:00+00:00" in loss.remedy("alerts")


def test_merge_keeps_the_highest_mark() -> None:
    ledger = BrokerLedger(consumer_role("g"), "consumer")
    ledger.advance("t", 0, 50)
    ledger.merge({("t", 0): Mark(40, since=T0), ("t", 1): Mark(9, since=T0)})
    assert ledger.marks[("t", 0)].next_offset == 50
    assert ledger.marks[("t", 1)].next_offset == 9


def test_unsaved_marks_are_handed_out_once_and_can_be_given_back() -> None:
    ledger = BrokerLedger(consumer_role("g"), "consumer")
    ledger.advance("t", 0, 5)
    ledger.advance("t", 0, 3)  # lower: not an advance
    ledger.advance("t", 1, 2)
    ledger.check("t", 1, 0)
    advanced, reset = ledger.take_unsaved()
    assert set(advanced) == {("t", 0)} and set(reset) == {("t", 1)}
    assert ledger.take_unsaved() == ({}, {})
    ledger.give_back(advanced, reset)  # saving failed
    again = ledger.take_unsaved()
    assert set(again[0]) == {("t", 0)} and set(again[1]) == {("t", 1)}
