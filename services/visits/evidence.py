"""Evidence use cases: the two-step upload a phone makes when it has signal (photos and
scans first, then the visit that references them), and serving the bytes back.

What may be uploaded is `evidence_types` (the bytes must carry the declared type's
signature); where the bytes live is an `EvidenceStore`; the metadata row is
`visits.evidence`. The size limit is the request middleware's (`max_evidence_bytes` for
`POST /v1/evidence`), counted as the body streams in.
"""

from __future__ import annotations

import hashlib
import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.visits import evidence_types, repository
from services.visits.evidence_store import EvidenceCorrupted, EvidenceStore
from services.visits.evidence_types import EvidenceKind
from services.visits.models import Evidence
from shared.auth import Principal
from shared.db import unit_of_work
from shared.errors import Problem, not_found

log = logging.getLogger(__name__)


def accepted_type(declared: str | None, data: bytes, kind: EvidenceKind | None) -> EvidenceKind:
    """The kind the upload is kept as, once its declared type is allowed (else 415) and its
    bytes are of that type (else 422 naming the body). `kind` defaults by type."""
    media = evidence_types.media_type(declared or "")
    if media not in evidence_types.ALLOWED_TYPES:
        allowed = ", ".join(evidence_types.ALLOWED_TYPES)
        raise Problem(
            415,
            "Unsupported Media Type",
            f"evidence must be one of {allowed}",
            errors=[{"field": "header.content-type", "message": f"not one of {allowed}"}],
        )
    if not data:
        raise _unprocessable("body", "is empty")
    found = evidence_types.sniff(data)
    if found != media:
        seen = f"they look like {found}" if found else "no allowed type's signature"
        raise _unprocessable("body", f"the bytes are not {media} ({seen})")
    allowed_kinds = evidence_types.KINDS_OF[media]
    if kind is None:
        return allowed_kinds[0]
    if kind not in allowed_kinds:
        raise _unprocessable("query.kind", f"{media} cannot be a {kind.value}")
    return kind


def _unprocessable(field: str, message: str) -> Problem:
    return Problem(
        422,
        "Unprocessable Content",
        "the evidence cannot be accepted",
        errors=[{"field": field, "message": message}],
    )


async def upload(
    sessions: async_sessionmaker[AsyncSession],
    store: EvidenceStore,
    who: Principal,
    declared: str | None,
    data: bytes,
    kind: EvidenceKind | None,
) -> tuple[Evidence, bool]:
    """Keep the upload and record it; returns the evidence and whether this call created it.

    The bytes are stored before the row commits, so a recorded evidence always has its
    bytes; a crash between the two leaves only an unreferenced object, which the next
    upload of the same file reuses. The same uploader sending the same bytes again (a
    retry from a phone that lost the answer) gets the same evidence back; as another kind
    it is a 409. An upload never attached to a visit is deleted after
    `UNATTACHED_EVIDENCE_DAYS` (services/visits/retention.py)."""
    accepted = accepted_type(declared, data, kind)
    sha256 = hashlib.sha256(data).hexdigest()
    candidate = Evidence(
        uploaded_by=who.sub,
        kind=accepted,
        content_type=evidence_types.media_type(declared or ""),
        size_bytes=len(data),
        sha256=sha256,
    )
    async with unit_of_work(sessions) as session:
        # Held from the put to the commit: a cleanup of the same bytes' object waits
        # (evidence_store's docstring). The bytes are in memory; the put is a write.
        await repository.lock_objects(session, [sha256], shared=True)
        await store.put(sha256, data)
        evidence = await repository.add_evidence(session, candidate)
    created = evidence.evidence_id == candidate.evidence_id
    if not created and evidence.kind != accepted:
        raise Problem(
            409, "Conflict", f"these bytes were already uploaded as a {evidence.kind.value}"
        )
    if created:
        log.info("evidence %s uploaded (%s, %d bytes)", evidence.evidence_id, accepted, len(data))
    return evidence, created


async def read(
    sessions: async_sessionmaker[AsyncSession],
    store: EvidenceStore,
    who: Principal,
    evidence_id: uuid.UUID,
) -> tuple[Evidence, bytes]:
    """The evidence and its bytes, if `who` may see them (`repository.visible_evidence`);
    404 as if absent otherwise. Bytes missing or altered in the store are a server error,
    logged, never served."""
    async with unit_of_work(sessions) as session:
        evidence = await repository.get_evidence_visible_to(session, evidence_id, who)
    if evidence is None:
        raise not_found("evidence")
    try:
        data = await store.get(evidence.sha256)
    except EvidenceCorrupted:
        log.error("evidence %s: stored bytes do not match their SHA-256", evidence_id)
        raise RuntimeError("stored evidence does not match its hash") from None
    if data is None:
        log.error("evidence %s: bytes missing from the store", evidence_id)
        raise RuntimeError("stored evidence is missing")
    return evidence, data
