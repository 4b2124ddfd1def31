"""Dead-letter records that always fit, and the way back from them.

A record on `<topic>.dlq` says which record failed (source topic, partition, offset, consumer
group), why, and what it held. A source record may be as large as the broker accepts, and
JSON-escaping control bytes multiplies its size by six, so the payload is capped: the first
64 KiB, as text when it is UTF-8 and as base64 otherwise, with the whole value's size and
SHA-256. Only a record whose payload (and key) were kept whole can be replayed
(`python -m shared.ops replay-dlq`); the others are evidence, still readable at their source
offset until the broker's retention removes them.

Largest record: 64 KiB of control characters escaped to 384 KiB, plus under 4 KiB of
metadata, well under the producer's 1 MiB request limit.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PAYLOAD_LIMIT = 64 * 1024
REASON_LIMIT = 2000
KEY_LIMIT = 256


@dataclass(frozen=True)
class Source:
    """Where the failed record came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None


def build(source: Source, *, group: str, reason: str, keep_payload: bool = True) -> dict[str, Any]:
    """The dead-letter record of `source`; with `keep_payload=False`, the minimal one."""
    value = source.value or b""
    record: dict[str, Any] = {
        "reason": reason[:REASON_LIMIT],
        "source_topic": source.topic,
        # Several groups consume one topic; each dead-letters its own copy.
        "consumer_group": group,
        "partition": source.partition,
        "offset": source.offset,
        "source_timestamp": _iso(source.timestamp_ms),
        "failed_at": datetime.now(UTC).isoformat(),
        "payload_size": len(value),
        "payload_sha256": _sha(value),
        **_key_fields(source.key),
    }
    if not keep_payload:
        # Still a string, so readers that search payloads need no special case.
        return {**record, "payload": "", "payload_encoding": None, "payload_truncated": True}
    head = value[:PAYLOAD_LIMIT]
    truncated = len(value) > PAYLOAD_LIMIT
    text = _utf8_prefix(head, whole=not truncated)
    if text is not None:
        payload, encoding = text, "utf-8"
    else:
        payload, encoding = base64.b64encode(head).decode("ascii"), "base64"
    return {
        **record,
        "payload": payload,
        "payload_encoding": encoding,
        "payload_truncated": truncated,
    }


def encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def dlq_key(key: bytes | None) -> bytes | None:
    """The dead letter's Kafka key: the source key, or its digest when it is too long."""
    if key is None or len(key) <= KEY_LIMIT:
        return key
    return hashlib.sha256(key).hexdigest().encode()


@dataclass(frozen=True)
class Replayable:
    topic: str
    key: bytes | None
    value: bytes
    source: tuple[str, int, int]  # topic, partition, offset


def replayable(record: dict[str, Any]) -> Replayable | None:
    """The original record, when the dead letter kept it whole; None otherwise."""
    if record.get("payload_truncated") is not False or record.get("key_truncated"):
        return None
    payload = record.get("payload")
    if not isinstance(payload, str):
        return None
    encoding = record.get("payload_encoding")
    value = base64.b64decode(payload) if encoding == "base64" else payload.encode()
    # The digest proves the bytes are the source's, not a lossy rendering of them.
    if _sha(value) != record.get("payload_sha256"):
        return None
    key_text = record.get("key")
    key = None
    if isinstance(key_text, str):
        key = (
            base64.b64decode(key_text)
            if record.get("key_encoding") == "base64"
            else key_text.encode()
        )
    topic = record.get("source_topic")
    if not isinstance(topic, str):
        return None
    return Replayable(
        topic, key, value, (topic, int(record.get("partition", -1)), int(record.get("offset", -1)))
    )


def _key_fields(key: bytes | None) -> dict[str, Any]:
    if key is None:
        return {"key": None}
    if len(key) > KEY_LIMIT:
        return {"key": None, "key_truncated": True, "key_sha256": _sha(key)}
    text = _utf8_prefix(key, whole=True)
    if text is not None:
        return {"key": text, "key_encoding": "utf-8"}
    return {"key": base64.b64encode(key).decode("ascii"), "key_encoding": "base64"}


def _utf8_prefix(data: bytes, *, whole: bool) -> str | None:
    """`data` as text if it is UTF-8; a cut-off prefix may end inside a character, which is
    dropped. None when it is not UTF-8."""
    try:
        if whole:
            return data.decode("utf-8")
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        return None


def _sha(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def _iso(timestamp_ms: int | None) -> str | None:
    if timestamp_ms is None or timestamp_ms < 0:
        return None
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat()
