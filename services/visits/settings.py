from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import ServiceSettings


class VisitsSettings(ServiceSettings):
    service_name: str = "visits"
    # An uploaded photo or scan larger than this is refused with a 413 as it streams in
    # (the JSON routes keep `max_body_bytes`): a 12-megapixel phone JPEG is 3 to 6 MB.
    max_evidence_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    # The LocalDirectoryStore's root (services/visits/evidence_store.py): shared by the
    # replicas of the API, or replaced by an object store.
    evidence_dir: Path = Path(".data/evidence")
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
