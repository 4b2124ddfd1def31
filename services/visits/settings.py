from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from shared.settings import ServiceSettings


class VisitsSettings(ServiceSettings):
    service_name: str = "visits"
    # The worker's consumer group on `loan-registered` (regions.py).
    consumer_group: str = "visits"
    # An uploaded photo or scan larger than this is refused with a 413 as it streams in
    # (the JSON routes keep `max_body_bytes`): a 12-megapixel phone JPEG is 3 to 6 MB.
    max_evidence_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    # Where uploaded bytes are kept (services/visits/stores.py): `local`, a directory
    # (`evidence_dir`, shared by the API's replicas), or `s3`, an S3-compatible bucket.
    evidence_store: Literal["local", "s3"] = "local"
    evidence_dir: Path = Path(".data/evidence")
    # EVIDENCE_S3_*: the bucket (which must exist), a key prefix, and for a store other
    # than AWS its endpoint URL; region and credentials default to boto3's own lookup
    # (AWS_* variables, instance profile).
    evidence_s3_bucket: str | None = None
    evidence_s3_prefix: str = "evidence/"
    evidence_s3_endpoint_url: str | None = None
    evidence_s3_region: str | None = None
    evidence_s3_access_key_id: str | None = None
    evidence_s3_secret_access_key: SecretStr | None = None
    # Database connections the API keeps open (and as many more at a peak): at least the
    # requests it serves at once, so none waits for a connection or opens one of its own.
    db_pool_size: int = Field(default=20, gt=0)
    # Per agent and API process (services/visits/rate_limits.py says why per process).
    visit_captures_per_minute: int = Field(default=60, gt=0)
    evidence_uploads_per_minute: int = Field(default=120, gt=0)
    # Retention (services/visits/retention.py): a capture's Idempotency-Key is honoured
    # this long; an untouched draft is kept this long; the worker sweeps this often.
    idempotency_key_days: int = Field(default=7, gt=0)
    draft_retention_days: int = Field(default=30, gt=0)
    retention_sweep_seconds: float = Field(default=3600, gt=0)
    # An upload no visit (and no draft of its uploader) lists is deleted this long after
    # it arrived, row and stored bytes (retention.py): a phone uploads its photos with the
    # visit, or within hours of it when it comes back online.
    unattached_evidence_days: int = Field(default=7, gt=0)

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Self:
        if self.evidence_store == "s3" and not self.evidence_s3_bucket:
            raise ValueError("EVIDENCE_STORE=s3 needs EVIDENCE_S3_BUCKET")
        return self
