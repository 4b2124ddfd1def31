from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class AlertsSettings(ServiceSettings):
    service_name: str = "alerts"
    consumer_group: str = "alerts"
    # How long a posting or visit may wait for its loan's `loan-registered` before it is
    # dead-lettered as an event about an unregistered loan (env PARK_GRACE_SECONDS). Long
    # enough for the scheduler's outbox to catch up after an outage of the scheduler.
    park_grace_seconds: float = Field(default=3600.0, ge=0)
    # How often the parking sweep looks for events past their grace (env PARK_SWEEP_SECONDS).
    park_sweep_seconds: float = Field(default=30.0, gt=0)
