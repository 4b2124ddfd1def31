"""Settings common to every Huifang service.

Every value has a safe local default so `make run` works on a fresh machine; production
(`ENV=production`) refuses the development secrets instead of running with them.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.consumer_defaults import DEFAULT_BATCH_SIZE, DEFAULT_FETCH_MAX_WAIT_MS

DEV_JWT_SECRET = "dev-secret-change-me"
# A Fernet key (urlsafe base64 of 32 bytes) that is only ever acceptable outside production.
DEV_PII_KEY = "ZGV2LXBpaS1rZXktY2hhbmdlLW1lLTMyLWJ5dGVzISE="


class ServiceSettings(BaseSettings):
    """Base settings; each service subclasses it with its own name, port and extras."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    env: Literal["local", "test", "production"] = "local"
    service_name: str = "huifang"
    database_url: str = "postgresql+asyncpg://huifang:huifang@127.0.0.1:5432/huifang"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    jwt_secret: str = DEV_JWT_SECRET
    # No bearer token is honoured for longer than this, whatever its `exp` says.
    jwt_max_lifetime_hours: float = Field(default=12.0, gt=0, le=24 * 7)
    pii_key: str = DEV_PII_KEY
    scheduler_url: str = "http://127.0.0.1:8001"
    # Service-to-service calls: short timeout, few retries, short cache (design.md).
    http_timeout_seconds: float = 2.0
    http_retries: int = 2
    http_cache_seconds: float = 30.0
    log_level: str = "INFO"
    # A JSON request body larger than this is refused with a 413 as it streams in.
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # Per-connection PostgreSQL limits (milliseconds; shared/db.py SessionLimits says why).
    db_lock_timeout_ms: int = Field(default=5_000, ge=0)
    db_idle_in_transaction_timeout_ms: int = Field(default=30_000, ge=0)
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    # Workers report on a health tick; readiness calls a worker stale after this long.
    worker_heartbeat_seconds: float = Field(default=5.0, gt=0)
    worker_stale_seconds: float = Field(default=30.0, gt=0)
    # Records of one topic a consumer applies in one transaction (shared/kafka.py).
    consumer_batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, le=10_000)
    # How long the broker may hold a consumer's empty fetch (shared/kafka.py says why short).
    consumer_fetch_max_wait_ms: int = Field(default=DEFAULT_FETCH_MAX_WAIT_MS, ge=1, le=10_000)

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> Self:
        if self.env == "production":
            if self.jwt_secret == DEV_JWT_SECRET:
                raise ValueError("JWT_SECRET must be set to a real secret when ENV=production")
            if self.pii_key == DEV_PII_KEY:
                raise ValueError("PII_KEY must be set to a real key when ENV=production")
        return self
