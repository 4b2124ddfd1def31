"""The evidence store the settings name (`EVIDENCE_STORE`): `local`, a directory
(`EVIDENCE_DIR`, the default), or `s3`, an S3-compatible object store
(services/visits/s3_store.py)."""

from __future__ import annotations

from services.visits.evidence_store import EvidenceStore, LocalDirectoryStore
from services.visits.settings import VisitsSettings


def evidence_store_for(settings: VisitsSettings) -> EvidenceStore:
    return LocalDirectoryStore(settings.evidence_dir)
