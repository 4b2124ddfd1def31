"""Versions and review in the tamper-evident record (services/visits/chain.py format 3 and
the review chain) and the bodies of review, correction and draft (schemas): pure."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.visits import chain
from services.visits.schemas import CorrectionIn, DraftIn, ReviewIn, VisitIn
from tests.unit.test_visit_chain import visit


def format3(**overrides: Any) -> dict[str, Any]:
    return visit(region="SH", evidence=[], corrects_visit_id=None, version=1) | overrides


def test_format_3_commits_to_the_version_and_keeps_formats_1_and_2_as_they_were() -> None:
    row = format3()
    # Formats 1 and 2 ignore the version fields: old entries verify as written.
    assert chain.payload_hash(row, 1) == chain.payload_hash(visit(**_base(row)), 1)
    assert chain.payload_hash(row, 2) == chain.payload_hash(row | {"version": 9}, 2)
    original = chain.payload_hash(row, 3)
    assert chain.payload_hash(row | {"version": 2}, 3) != original
    assert chain.payload_hash(row | {"corrects_visit_id": uuid.uuid4()}, 3) != original
    assert len({chain.payload_hash(row, f) for f in (1, 2, 3)}) == 3
    with pytest.raises(ValueError, match="format"):
        chain.payload_hash(row, 4)


def _base(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in chain.CHAINED_FIELDS}


def review(visit_id: uuid.UUID, **overrides: Any) -> dict[str, Any]:
    return {
        "review_id": uuid.uuid4(),
        "visit_id": visit_id,
        "loan_id": "L-1",
        "decision": "return",
        "reason": "照片模糊",
        "reviewed_by": "sup-1",
        "reviewed_at": datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
        "visit_entry_hash": "e" * 64,
    } | overrides


def review_entries(reviews: list[dict[str, Any]]) -> list[chain.StoredEntry]:
    stored, previous = [], None
    for r in reviews:
        link = chain.next_review_link(previous, r)
        previous = (link.seq, link.entry_hash)
        stored.append(
            chain.StoredEntry(
                r["loan_id"],
                link.seq,
                r["visit_id"],
                link.prev_hash,
                link.payload_hash,
                link.entry_hash,
                dict(r),
            )
        )
    return stored


def walk(stored: list[chain.StoredEntry]) -> chain.Verification:
    verification = chain.Verification(
        hasher=chain.review_payload_hash, formats=(1,), noun="review decision"
    )
    verification.feed(stored)
    return verification


def test_the_review_chain_finds_a_decision_rewritten_or_moved() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    stored = review_entries([review(first), review(second, decision="approve", reason=None)])
    assert (walk(stored).checked, walk(stored).first_break) == (2, None)

    rewritten = stored[0].visit or {}
    stored[0] = _with_row(stored[0], dict(rewritten) | {"decision": "approve"})
    broken = walk(stored).first_break
    assert broken is not None and broken.seq == 1 and "review decision" in broken.reason

    # Pointing a decision at another version changes the entry hash it commits to.
    moved = review_entries([review(first)])
    moved[0] = _with_row(moved[0], dict(moved[0].visit or {}) | {"visit_entry_hash": "f" * 64})
    assert walk(moved).first_break is not None


def _with_row(entry: chain.StoredEntry, row: dict[str, Any]) -> chain.StoredEntry:
    return chain.StoredEntry(
        entry.loan_id,
        entry.seq,
        entry.visit_id,
        entry.prev_hash,
        entry.payload_hash,
        entry.entry_hash,
        row,
        format=entry.format,
    )


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_returning_a_visit_needs_a_reason(reason: str | None) -> None:
    body: dict[str, Any] = {"decision": "return"} | (
        {"reason": reason} if reason is not None else {}
    )
    with pytest.raises(ValidationError) as caught:
        ReviewIn.model_validate(body)
    assert [e["loc"] for e in caught.value.errors()] == [("reason",)]
    assert ReviewIn.model_validate({"decision": "approve"}).reason is None


def test_a_visit_id_left_out_keeps_the_request_hash_of_older_captures() -> None:
    at = datetime.now(UTC) - timedelta(hours=1)
    body = {
        "loan_id": "L-1",
        "method": "phone",
        "outcome": "completed",
        "started_at": at.isoformat(),
        "ended_at": (at + timedelta(minutes=5)).isoformat(),
        "findings": {},
    }
    plain = VisitIn.model_validate(body)
    assert plain.request_hash() == VisitIn.model_validate(body | {"visit_id": None}).request_hash()
    with_id = VisitIn.model_validate(body | {"visit_id": str(uuid.uuid4())})
    assert with_id.request_hash() != plain.request_hash()


def test_corrections_and_drafts_check_their_shape() -> None:
    at = datetime.now(UTC) - timedelta(hours=1)
    with pytest.raises(ValidationError, match="before started_at"):
        CorrectionIn.model_validate(
            {
                "outcome": "completed",
                "started_at": at.isoformat(),
                "ended_at": (at - timedelta(minutes=1)).isoformat(),
                "findings": {},
            }
        )
    # A correction cannot move the visit to another loan or task.
    with pytest.raises(ValidationError):
        CorrectionIn.model_validate({"loan_id": "L-2"})
    assert DraftIn.model_validate({}).model_dump(exclude_unset=True) == {}
    with pytest.raises(ValidationError):
        DraftIn.model_validate({"method": "teleport"})
