"""The evidence store the settings name (`EVIDENCE_STORE`): `local`, a directory
(`EVIDENCE_DIR`, the default), or `s3`, an S3-compatible object store
(services/visits/s3_store.py)."""

from __future__ import annotations

from services.visits.evidence_store import EvidenceStore, LocalDirectoryStore
from services.visits.settings import VisitsSettings


def evidence_store_for(settings: VisitsSettings) -> EvidenceStore:
    if settings.evidence_store == "s3":
        # Imported here: boto3 takes a while to import, and the local store needs none of it.
        from services.visits.s3_store import S3Store

        assert settings.evidence_s3_bucket is not None  # the settings refuse s3 without one
        secret = settings.evidence_s3_secret_access_key
        return S3Store(
            settings.evidence_s3_bucket,
            prefix=settings.evidence_s3_prefix,
            endpoint_url=settings.evidence_s3_endpoint_url,
            region=settings.evidence_s3_region,
            access_key_id=settings.evidence_s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
        )
    return LocalDirectoryStore(settings.evidence_dir)
