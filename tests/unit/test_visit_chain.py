"""The tamper-evident chain of visits (services/visits/chain.py): hashing and verification."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from services.visits import chain


def visit(loan_id: str = "L-1", **overrides: Any) -> dict[str, Any]:
    at = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    return {
        "visit_id": uuid.uuid4(),
        "loan_id": loan_id,
        "agent_id": "AG-1",
        "request_hash": "a" * 64,
        "task_id": None,
        "method": "field",
        "outcome": "completed",
        "started_at": at,
        "ended_at": at + timedelta(minutes=30),
        "findings": {"vehicle_sighted": True, "encumbrance_detected": False},
        "geo_lat": 31.23,
        "geo_lon": 121.47,
        "notes": "车辆停在小区",
        "created_at": at + timedelta(minutes=31),
    } | overrides


def entries(visits: list[dict[str, Any]]) -> list[chain.StoredEntry]:
    stored, previous, loan = [], None, None
    for v in visits:
        if v["loan_id"] != loan:
            loan, previous = v["loan_id"], None
        link = chain.next_link(previous, v)
        previous = (link.seq, link.entry_hash)
        stored.append(
            chain.StoredEntry(
                v["loan_id"],
                link.seq,
                v["visit_id"],
                link.prev_hash,
                link.payload_hash,
                link.entry_hash,
                dict(v),
            )
        )
    return stored


def first_break(stored: list[chain.StoredEntry]) -> chain.Break | None:
    walk = chain.Verification()
    walk.feed(stored)
    return walk.first_break


def test_the_payload_hash_is_the_same_for_every_spelling_of_a_row() -> None:
    row = visit()
    shanghai = timezone(timedelta(hours=8))
    respelt = row | {
        "started_at": row["started_at"].astimezone(shanghai),
        "findings": dict(reversed(list(row["findings"].items()))),
        "visit_id": row["visit_id"],
    }
    assert chain.payload_hash(respelt) == chain.payload_hash(row)
    # Operational columns are not part of the record.
    assert chain.payload_hash(row | {"idempotency_key": "K-2"}) == chain.payload_hash(row)


def test_entries_link_each_loan_from_genesis() -> None:
    stored = entries([visit(), visit(), visit("L-2")])
    assert [(e.loan_id, e.seq) for e in stored] == [("L-1", 1), ("L-1", 2), ("L-2", 1)]
    assert stored[0].prev_hash == stored[2].prev_hash == chain.GENESIS
    assert stored[1].prev_hash == stored[0].entry_hash
    walk = chain.Verification()
    walk.feed(stored)
    assert (walk.checked, walk.first_break) == (3, None)


def test_an_altered_row_breaks_its_entry() -> None:
    stored = entries([visit(), visit(), visit()])
    altered = stored[1].visit or {}
    stored[1] = chain.StoredEntry(
        **{**stored[1].__dict__, "visit": {**altered, "findings": {"encumbrance_detected": True}}}
    )
    broken = first_break(stored)
    assert broken is not None
    assert (broken.seq, broken.visit_id) == (2, stored[1].visit_id)
    assert "altered" in broken.reason


def test_a_removed_entry_or_a_rewritten_link_is_found() -> None:
    stored = entries([visit(), visit(), visit()])
    gap = first_break([stored[0], stored[2]])
    assert gap is not None and gap.seq == 3 and "sequence" in gap.reason

    # Re-hashing an altered row's own entry does not help: the next entry still points to
    # the old hash.
    forged_visit = {**(stored[0].visit or {}), "outcome": "refused"}
    link = chain.next_link(None, forged_visit)
    forged = chain.StoredEntry(
        "L-1",
        1,
        stored[0].visit_id,
        link.prev_hash,
        link.payload_hash,
        link.entry_hash,
        forged_visit,
    )
    broken = first_break([forged, *stored[1:]])
    assert broken is not None and broken.seq == 2 and "prev_hash" in broken.reason

    missing = chain.StoredEntry(**{**stored[0].__dict__, "visit": None})
    gone = first_break([missing])
    assert gone is not None and "missing" in gone.reason


def test_a_tampered_entry_hash_is_found() -> None:
    stored = entries([visit()])
    tampered = chain.StoredEntry(**{**stored[0].__dict__, "entry_hash": "f" * 64})
    broken = first_break([tampered])
    assert broken is not None and "entry_hash" in broken.reason


def test_a_report_that_no_longer_hashes_to_its_request_hash_is_found() -> None:
    stored = entries([visit(request_hash="b" * 64)])
    reported = chain.StoredEntry(**{**stored[0].__dict__, "report": {"kind": "gps_position"}})
    walk = chain.Verification(report_hash=lambda report: "b" * 64)
    walk.feed([reported])
    assert walk.first_break is None
    altered = chain.Verification(report_hash=lambda report: "c" * 64)
    altered.feed([reported])
    assert altered.first_break is not None and "report" in altered.first_break.reason
