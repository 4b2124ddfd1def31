"""Dead-letter records always fit the producer's request limit, and the ones kept whole give
back the exact source record (shared/dead_letters.py)."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.dead_letters import (
    KEY_LIMIT,
    PAYLOAD_LIMIT,
    Source,
    build,
    dlq_key,
    encode,
    replayable,
)

PRODUCER_LIMIT = 1024 * 1024  # aiokafka's default max_request_size
# What the largest dead letter may take: the payload escaped six-fold, and metadata.
RECORD_BOUND = 6 * PAYLOAD_LIMIT + 8 * 1024


def source(value: bytes | None, key: bytes | None = b"L-1") -> Source:
    return Source("repayment-posted", 2, 41, 1_764_500_000_000, key, value)


def dead(value: bytes | None, key: bytes | None = b"L-1", **kw: bool) -> dict[str, object]:
    return build(source(value, key), group="scheduler", reason="unparseable event", **kw)


def test_200_kb_of_control_bytes_is_truncated_and_fits() -> None:
    value = b"\x01" * 200 * 1024
    record = dead(value)
    encoded = encode(record)
    assert len(encoded) <= RECORD_BOUND < PRODUCER_LIMIT
    # The old record (the whole value JSON-escaped) did not fit.
    assert len(json.dumps({"payload": value.decode()}).encode()) > PRODUCER_LIMIT
    assert record["payload_truncated"] is True
    assert record["payload_encoding"] == "utf-8"
    assert record["payload_size"] == len(value)
    assert record["payload_sha256"] == hashlib.sha256(value).hexdigest()
    assert (record["source_topic"], record["partition"], record["offset"]) == (
        "repayment-posted",
        2,
        41,
    )
    assert record["consumer_group"] == "scheduler"
    assert replayable(json.loads(encoded)) is None  # evidence only


def test_binary_is_kept_as_base64_and_replays_byte_for_byte() -> None:
    value = bytes(range(256)) * 4
    record = json.loads(encode(dead(value, key=b"\xff\x00")))
    assert record["payload_encoding"] == "base64"
    original = replayable(record)
    assert original is not None
    assert (original.topic, original.key, original.value) == (
        "repayment-posted",
        b"\xff\x00",
        value,
    )
    assert original.source == ("repayment-posted", 2, 41)


def test_a_valid_event_stays_readable_text() -> None:
    value = json.dumps({"loan_id": "L-1", "note": "车辆已抵押"}, ensure_ascii=False).encode()
    record = json.loads(encode(dead(value)))
    assert "L-1" in record["payload"] and record["payload_encoding"] == "utf-8"
    original = replayable(record)
    assert original is not None and original.value == value and original.key == b"L-1"


def test_a_cut_inside_a_character_keeps_valid_text() -> None:
    value = b"a" + "车".encode() * PAYLOAD_LIMIT  # the cut falls inside a 3-byte character
    record = dead(value)
    assert record["payload_encoding"] == "utf-8"
    assert isinstance(record["payload"], str)
    assert len(record["payload"].encode()) <= PAYLOAD_LIMIT


def test_a_long_key_is_digested_and_makes_the_record_evidence_only() -> None:
    key = b"k" * (KEY_LIMIT + 1)
    record = json.loads(encode(dead(b"{}", key=key)))
    assert record["key"] is None and record["key_truncated"] is True
    assert dlq_key(key) == hashlib.sha256(key).hexdigest().encode()
    assert dlq_key(b"L-1") == b"L-1"
    assert replayable(record) is None


def test_the_minimal_record_keeps_the_pointers_but_no_payload() -> None:
    value = b"x" * 100_000
    record = json.loads(encode(dead(value, keep_payload=False)))
    assert record["payload"] == "" and record["payload_truncated"] is True
    assert record["payload_size"] == len(value)
    assert record["payload_sha256"] == hashlib.sha256(value).hexdigest()
    assert record["offset"] == 41
    assert len(encode(record)) < 2048
    assert replayable(record) is None


def test_a_tampered_payload_is_not_replayed() -> None:
    record = json.loads(encode(dead(b'{"loan_id": "L-1"}')))
    record["payload"] = '{"loan_id": "L-2"}'
    assert replayable(record) is None


def test_an_empty_value_is_recorded() -> None:
    record = dead(None)
    assert record["payload"] == "" and record["payload_size"] == 0


@settings(max_examples=60, deadline=None)
@given(
    value=st.one_of(
        st.binary(max_size=2048),
        st.text(max_size=512).map(str.encode),
        st.integers(0, 3 * PAYLOAD_LIMIT).map(lambda n: b"\x00" * n),
    ),
    key=st.one_of(st.none(), st.binary(max_size=2 * KEY_LIMIT)),
)
def test_every_record_fits_and_whole_ones_round_trip(value: bytes, key: bytes | None) -> None:
    encoded = encode(dead(value, key=key))
    assert len(encoded) <= RECORD_BOUND
    record = json.loads(encoded)
    original = replayable(record)
    whole = len(value) <= PAYLOAD_LIMIT and (key is None or len(key) <= KEY_LIMIT)
    assert (original is not None) == whole
    if original is not None:
        assert (original.value, original.key) == (value, key)
