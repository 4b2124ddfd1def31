"""The event contract, pinned: a renamed or dropped field fails here, and so does a changed
type, bound, required field or enum value (against `docs/events/<topic>.schema.json`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.events import (
    ALERT_RAISED,
    ALL_TOPICS,
    EVENT_MODELS,
    LOAN_REGISTERED,
    REPAYMENT_POSTED,
    VISIT_COMPLETED,
    RepaymentPosted,
    parse_event,
)
from shared.events.schema import (
    DOCS_DIR,
    REGENERATE,
    event_schema,
    render,
    schema_file_name,
    stale_files,
    write,
)

ENVELOPE = {"event_id", "event_type", "schema_version", "occurred_at", "loan_id"}
CONTRACT = {
    REPAYMENT_POSTED: ENVELOPE
    | {
        "installment_no",
        "due_date",
        "amount_due",
        "amount_paid",
        "paid_at",
        "status",
        "days_past_due",
        "outstanding_principal",
    },
    VISIT_COMPLETED: ENVELOPE
    | {
        "visit_id",
        "task_id",
        "agent_id",
        "method",
        "outcome",
        "started_at",
        "ended_at",
        "findings",
    },
    ALERT_RAISED: ENVELOPE
    | {
        "alert_id",
        "rule",
        "category",
        "severity",
        "reason",
        "source_event_id",
        "recommended_action",
    },
    LOAN_REGISTERED: ENVELOPE
    | {
        "region",
        "credit_grade",
        "agreed_usage",
        "principal",
        "term_months",
        "disbursed_on",
        "valuation",
        "ltv",
    },
}
FINDINGS = {
    "identity_verified",
    "employment_status",
    "income_change",
    "vehicle_sighted",
    "vehicle_usage",
    "vehicle_condition",
    "collateral_documents_intact",
    "encumbrance_detected",
    "repayment_difficulty",
}


def repayment(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "repayment-posted",
        "schema_version": 1,
        "occurred_at": "2026-06-01T18:00:00+08:00",
        "loan_id": "L-1",
        "installment_no": 3,
        "due_date": "2026-06-01",
        "amount_due": "3000.00",
        "amount_paid": "0.00",
        "paid_at": None,
        "status": "missed",
        "days_past_due": 31,
        "outstanding_principal": "72000.00",
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize("topic", list(CONTRACT))
def test_json_schema_fields_are_pinned(topic: str) -> None:
    schema = EVENT_MODELS[topic].model_json_schema()
    assert set(schema["properties"]) == CONTRACT[topic]


def stored_schema(topic: str, directory: Path = DOCS_DIR) -> dict[str, Any]:
    path = directory / schema_file_name(topic)
    assert path.is_file(), f"{path} is missing: run `{REGENERATE}` and commit docs/events/"
    stored: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return stored


@pytest.mark.parametrize("topic", list(EVENT_MODELS))
def test_the_event_model_is_its_checked_in_json_schema(topic: str) -> None:
    assert event_schema(topic) == stored_schema(topic), (
        f"The {topic} event no longer matches docs/events/{schema_file_name(topic)}: a type, "
        "bound, required field or enum value changed, which partners must hear of. If the "
        f"change is intended, run `{REGENERATE}` and commit docs/events/ with it (and bump "
        "schema_version if old consumers would refuse it); otherwise undo the model change."
    )


def test_the_checked_in_schemas_are_exactly_the_topics() -> None:
    stale = stale_files(DOCS_DIR)
    assert stale == [], f"stale or extra files in docs/events/: {stale}; run `{REGENERATE}`"


def test_a_changed_enum_value_type_or_bound_is_caught(tmp_path: Path) -> None:
    write(tmp_path)
    assert stale_files(tmp_path) == []
    name = schema_file_name(REPAYMENT_POSTED)
    original = (tmp_path / name).read_text("utf-8")
    changes: list[Callable[[dict[str, Any]], None]] = [
        lambda s: s["$defs"]["RepaymentStatus"]["enum"].append("late"),
        lambda s: s["properties"]["installment_no"].update(type="string"),
        lambda s: s["properties"]["days_past_due"].update(maximum=10**6),
        lambda s: s["required"].remove("due_date"),
    ]
    assert render(json.loads(original)) == original
    for change in changes:
        schema = json.loads(original)
        change(schema)
        (tmp_path / name).write_text(render(schema), "utf-8")
        assert stale_files(tmp_path) == [name]
    (tmp_path / name).write_text(original, "utf-8")
    (tmp_path / "loan-written-off.schema.json").write_text("{}", "utf-8")
    assert stale_files(tmp_path) == ["loan-written-off.schema.json"]
    write(tmp_path)
    assert stale_files(tmp_path) == []


def enum_of(schema: dict[str, Any], field: str) -> list[str]:
    """The values a field's schema allows, through its `$ref` to the shared vocabulary."""
    ref: str = schema["properties"][field]["$ref"]
    values: list[str] = schema["$defs"][ref.removeprefix("#/$defs/")]["enum"]
    return values


def test_the_schemas_carry_types_enums_and_bounds() -> None:
    """What a partner reads in docs/events/ is the real contract, not just field names."""
    posted = stored_schema(REPAYMENT_POSTED)
    assert enum_of(posted, "status") == ["paid", "partial", "missed", "reversed"]
    assert posted["properties"]["days_past_due"] == {
        "maximum": 10_000,
        "minimum": 0,
        "title": "Days Past Due",
        "type": "integer",
    }
    assert posted["properties"]["event_id"]["format"] == "uuid"
    assert {"loan_id", "installment_no", "status"} <= set(posted["required"])
    visit = stored_schema(VISIT_COMPLETED)
    assert enum_of(visit, "method") == ["phone", "field", "third_party"]
    raised = stored_schema(ALERT_RAISED)
    assert enum_of(raised, "severity") == ["low", "medium", "high", "critical"]
    assert raised["properties"]["reason"]["maxLength"] == 2000
    registered = stored_schema(LOAN_REGISTERED)
    assert enum_of(registered, "credit_grade") == ["A", "B", "C", "D", "E"]
    assert registered["properties"]["term_months"]["maximum"] == 600
    assert "ltv" not in registered["required"]


def test_findings_carry_the_four_key_items() -> None:
    schema = EVENT_MODELS[VISIT_COMPLETED].model_json_schema()
    findings_ref = schema["properties"]["findings"]["$ref"].split("/")[-1]
    assert set(schema["$defs"][findings_ref]["properties"]) == FINDINGS


def test_topics_and_their_dead_letter_twins() -> None:
    assert set(ALL_TOPICS) == {
        "repayment-posted",
        "repayment-posted.dlq",
        "visit-completed",
        "visit-completed.dlq",
        "alert-raised",
        "alert-raised.dlq",
        "loan-registered",
        "loan-registered.dlq",
        "repayment-plan-approved",
        "repayment-plan-approved.dlq",
    }


def test_money_travels_as_decimal_strings_and_unknown_fields_are_ignored() -> None:
    event = parse_event(REPAYMENT_POSTED, json.dumps(repayment(extra="x")).encode())
    assert isinstance(event, RepaymentPosted)
    dumped = json.loads(event.model_dump_json())
    assert dumped["amount_due"] == "3000.00"
    assert "extra" not in dumped


@pytest.mark.parametrize(
    "bad",
    [
        repayment(status="late"),
        repayment(event_type="visit-completed"),
        repayment(occurred_at="2026-06-01T18:00:00"),  # no offset
        repayment(amount_due=-1),
        repayment(days_past_due=-2),
        {k: v for k, v in repayment().items() if k != "loan_id"},
        # Bounds: what one consumer cannot apply, no consumer may apply.
        repayment(days_past_due=10**12),
        repayment(installment_no=10**9),
        repayment(occurred_at="9999-12-31T00:00:00+00:00"),
        repayment(occurred_at="0001-01-01T00:00:00+00:00"),
        repayment(due_date="9999-12-31"),
        repayment(paid_at="9999-12-31T00:00:00+00:00"),
        repayment(amount_due="1" * 20),
        repayment(loan_id="L\x00x"),
        repayment(loan_id="x" * 65),
        repayment(schema_version=10**12),
    ],
)
def test_invalid_events_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse_event(REPAYMENT_POSTED, json.dumps(bad).encode())


def test_unparseable_bytes_are_rejected() -> None:
    with pytest.raises(ValueError):
        parse_event(REPAYMENT_POSTED, b"\x00not json")


def test_a_visit_cannot_end_before_it_started() -> None:
    visit = {
        "event_id": str(uuid.uuid4()),
        "event_type": "visit-completed",
        "occurred_at": "2026-06-01T18:00:00+08:00",
        "loan_id": "L-1",
        "visit_id": str(uuid.uuid4()),
        "agent_id": "AG-1",
        "method": "field",
        "outcome": "completed",
        "started_at": "2026-06-01T17:00:00+08:00",
        "ended_at": "2026-06-01T16:00:00+08:00",
        "findings": {},
    }
    with pytest.raises(ValidationError, match="ended_at"):
        parse_event(VISIT_COMPLETED, json.dumps(visit).encode())
    visit["ended_at"] = "2026-06-01T17:40:00+08:00"
    assert parse_event(VISIT_COMPLETED, json.dumps(visit).encode()).loan_id == "L-1"


def test_bounds_admit_the_edges_of_a_real_loan() -> None:
    event = parse_event(
        REPAYMENT_POSTED,
        json.dumps(
            repayment(days_past_due=3650, installment_no=120, due_date="2000-01-01")
        ).encode(),
    )
    assert isinstance(event, RepaymentPosted)
    assert event.days_past_due == 3650
