"""The fault suite's own logic, so that its verdicts can be trusted: the workload's shape,
which postings count as before or after a broker restart, how a reported loss is
recognised in logs and readiness answers."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from tests.faults import core_banking, evidence
from tests.faults.core_banking import Stream


def test_postings_miss_the_given_share_and_keep_each_loans_installments_in_order() -> None:
    loans = core_banking.loan_ids(10)
    made = core_banking.postings(loans, 100, missed_share=0.2)
    assert len({p.event_id for p in made}) == 100
    assert sum(p.missed for p in made) == 20
    installments: dict[str, list[int]] = defaultdict(list)
    for posting in made:
        event = json.loads(posting.value)
        installments[posting.loan_id].append(event["installment_no"])
        assert (event["status"] == "missed") == posting.missed
        assert event["event_id"] == posting.event_id and event["loan_id"] == posting.loan_id
        if posting.missed:
            assert event["days_past_due"] in core_banking.MISSED_DAYS_PAST_DUE
    assert all(numbers == list(range(1, 11)) for numbers in installments.values())
    missed_dpd = {json.loads(p.value)["days_past_due"] for p in made if p.missed}
    assert missed_dpd == set(core_banking.MISSED_DAYS_PAST_DUE)


def test_acknowledgements_split_at_the_restart() -> None:
    stream = Stream(acked_at={"a": 1.0, "b": 2.0, "c": 3.0})
    assert stream.acked_before(2.0) == {"a"}
    assert stream.acked_after(2.0) == {"b", "c"}


def test_a_reported_loss_is_recognised_in_our_errors_only() -> None:
    lines = [
        evidence.LogLine(
            "scheduler-worker",
            "ERROR",
            "the broker lost records of repayment-posted partition 0: consumer:scheduler had "
            "seen it up to offset 902, it now stands at 0",
        ),
        evidence.LogLine(
            "alerts-worker", "ERROR", "the broker lost records of alert-raised partition 2: x"
        ),
        evidence.LogLine("alerts-worker", "WARNING", "offset commit lost to a rebalance"),
        evidence.LogLine(
            "alerts-worker", "ERROR", "Connection lost to node 1 (events pending)", "aiokafka.conn"
        ),
        evidence.LogLine("alerts-worker", "ERROR", "outbox publish failed; retrying"),
    ]
    assert evidence.loss_in_logs(lines) == lines[:2]
    answers = [
        (200, '{"status":"ready","checks":{"broker_loss":{"ok":true,"detail":"none"}}}'),
        (503, '{"checks":{"broker_loss":{"ok":false,"detail":[{"topic":"alert-raised"}]}}}'),
        (503, '{"checks":{"consumer:alerts":{"ok":false},"broker_loss":{"ok":true}}}'),
    ]
    assert evidence.loss_in_readiness(answers) == answers[1:2]


def test_log_lines_keep_what_is_not_json_as_raw(tmp_path: Path) -> None:
    (tmp_path / "alerts-worker.log").write_text(
        json.dumps({"level": "WARNING", "message": "event sent to dead-letter topic: x"})
        + "\nTraceback (most recent call last):\n"
    )
    lines = evidence.log_lines(tmp_path)
    assert [(line.level, line.process) for line in lines] == [
        ("WARNING", "alerts-worker"),
        ("RAW", "alerts-worker"),
    ]
    assert evidence.dead_letters_logged(lines) == 1


def test_a_batch_summary_counts_as_a_dead_letter_only_when_it_names_some(tmp_path: Path) -> None:
    summary = (
        "group alerts, repayment-posted: 1000 records from partitions 1: {} applied, "
        "0 duplicates ignored, "
        "{} dead-lettered (0 unreadable), 1 transactions (0 splits, 0 transient retries)"
    )
    (tmp_path / "alerts-worker.log").write_text(
        "\n".join(
            json.dumps({"level": "INFO", "message": summary.format(applied, dead)})
            for applied, dead in ((1000, 0), (998, 2))
        )
    )
    assert evidence.dead_letters_logged(evidence.log_lines(tmp_path)) == 1
