from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings
from shared.vocabulary import Severity


class AlertsSettings(ServiceSettings):
    service_name: str = "alerts"
    consumer_group: str = "alerts"
    # How long a posting or visit may wait for its loan's `loan-registered` before it is
    # dead-lettered as an event about an unregistered loan (env PARK_GRACE_SECONDS). Long
    # enough for the scheduler's outbox to catch up after an outage of the scheduler.
    park_grace_seconds: float = Field(default=3600.0, ge=0)
    # How often the parking sweep looks for events past their grace (env PARK_SWEEP_SECONDS).
    park_sweep_seconds: float = Field(default=30.0, gt=0)
    # How long an alert of each severity may wait open (unacknowledged) before it goes to
    # the supervisor queue, in minutes, from when it took that severity (env
    # ALERT_ACK_SLA_MINUTES as JSON). A severity not listed has no deadline.
    alert_ack_sla_minutes: dict[Severity, float] = Field(
        default={Severity.CRITICAL: 240.0, Severity.HIGH: 1440.0}
    )
    # How often the worker's SLA sweep looks for alerts past their deadline.
    sla_sweep_seconds: float = Field(default=60.0, gt=0)
