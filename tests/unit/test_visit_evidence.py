"""Evidence, pure parts: types told from the bytes, the content-addressed local store, the
chain's format 2 and the per-agent token buckets."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from services.visits import chain
from services.visits.evidence import accepted_type
from services.visits.evidence_store import EvidenceCorrupted, LocalDirectoryStore
from services.visits.evidence_types import EvidenceKind, media_type, sniff
from services.visits.rate_limits import RateLimiter
from shared.errors import Problem
from tests.support import png

JPEG = b"\xff\xd8\xff\xdb\x00\x43\x00"
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
PDF = b"%PDF-1.4\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (JPEG, "image/jpeg"),
        (png(), "image/png"),
        (HEIC, "image/heic"),
        (PDF, "application/pdf"),
        (b"<html>", None),
        (b"\x00\x00\x00\x18ftypisom", None),  # an MP4 video, not a HEIF photo
        (b"\xff\xd8", None),
        (b"", None),
    ],
)
def test_types_are_told_from_the_bytes(data: bytes, expected: str | None) -> None:
    assert sniff(data) == expected


def test_a_declared_type_is_checked_against_the_bytes() -> None:
    assert media_type(" Image/PNG ; q=1") == "image/png"
    assert accepted_type("image/png", png(), None) == EvidenceKind.PHOTO
    assert accepted_type("application/pdf", PDF, None) == EvidenceKind.DOCUMENT
    assert accepted_type("image/jpeg", JPEG, EvidenceKind.DOCUMENT) == EvidenceKind.DOCUMENT
    for declared, data, status, field in [
        ("image/jpeg", png(), 422, "body"),
        ("image/png", b"<svg onload=alert(1)>", 422, "body"),
        ("image/svg+xml", b"<svg/>", 415, "header.content-type"),
        (None, JPEG, 415, "header.content-type"),
    ]:
        with pytest.raises(Problem) as refused:
            accepted_type(declared, data, None)
        assert refused.value.status == status
        assert [e["field"] for e in refused.value.errors or []] == [field]


def stored_names(root: Path) -> list[str]:
    return [path.name for path in root.rglob("*") if path.is_file()]


async def test_the_local_store_keeps_bytes_by_their_hash_and_checks_them(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path)
    data = png()
    sha256 = hashlib.sha256(data).hexdigest()
    await store.put(sha256, data)
    await store.put(sha256, data)  # a retry: the same object, no error
    assert await store.get(sha256) == data
    assert stored_names(tmp_path) == [sha256]
    assert await store.get("0" * 64) is None
    with pytest.raises(ValueError, match="do not hash"):
        await store.put(sha256, data + b"x")
    with pytest.raises(ValueError, match="SHA-256"):
        await store.get("../../etc/passwd")
    (tmp_path / sha256[:2] / sha256).write_bytes(b"another car")
    with pytest.raises(EvidenceCorrupted):
        await store.get(sha256)


def test_format_2_commits_to_the_region_and_the_evidence_hashes() -> None:
    visit = {name: f"v-{name}" for name in chain.CHAINED_FIELDS}
    photo, scan = uuid.uuid4(), uuid.uuid4()
    items = chain.evidence_items([(photo, "a" * 64), (scan, "b" * 64)])
    v2 = {**visit, chain.REGION: "SH", chain.EVIDENCE: items}
    reference = chain.payload_hash(v2, 2)
    # One order for the same evidence, whatever order it was listed in.
    reordered = chain.evidence_items([(scan, "b" * 64), (photo, "a" * 64)])
    assert chain.payload_hash({**v2, chain.EVIDENCE: reordered}, 2) == reference
    swapped = chain.evidence_items([(photo, "c" * 64), (scan, "b" * 64)])
    assert chain.payload_hash({**v2, chain.EVIDENCE: swapped}, 2) != reference
    assert chain.payload_hash({**v2, chain.EVIDENCE: items[:1]}, 2) != reference
    assert chain.payload_hash({**v2, chain.REGION: "BJ"}, 2) != reference
    # The same visit under format 1 hashes otherwise: flipping an entry's format is found.
    assert chain.payload_hash(v2, 1) == chain.payload_hash(visit, 1) != reference
    with pytest.raises(ValueError, match="unknown chain format"):
        chain.payload_hash(v2, 4)


def test_a_bucket_per_caller_refills_at_its_rate() -> None:
    now = [0.0]
    limits = RateLimiter("visit captures", 60, clock=lambda: now[0], max_callers=2)
    assert [limits.wait_seconds("AG-1") for _ in range(60)] == [0.0] * 60
    assert limits.wait_seconds("AG-1") == pytest.approx(1.0)
    assert limits.wait_seconds("AG-2") == 0.0  # another caller has its own bucket
    now[0] += 1.0
    assert limits.wait_seconds("AG-1") == 0.0
    with pytest.raises(Problem) as limited:
        limits.check("AG-1")
    assert limited.value.status == 429
    assert limited.value.headers == {"Retry-After": "1"}
    # Idle long enough, a bucket is full again, never fuller.
    now[0] += 3600
    assert sum(limits.wait_seconds("AG-1") == 0.0 for _ in range(100)) == 60
    # Bounded memory: a third caller evicts the least recently used.
    limits.wait_seconds("AG-3")
    assert len(limits._buckets) == 2
