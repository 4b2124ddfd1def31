"""Follow `alert-raised` and print each alert for the desk as it comes.

`python -m services.alerts.tail [--from-beginning]` (KAFKA_BOOTSTRAP_SERVERS as the services
read it). It reads without a consumer group, so it never takes records from the workers;
an escalation prints again under the same alert id with its new severity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from services.alerts.settings import AlertsSettings
from shared.events import ALERT_RAISED, AlertRaised

# Worst first, so the eye finds them: a fixed-width tag per severity.
TAGS = {"critical": "CRIT", "high": "HIGH", "medium": "MED ", "low": "LOW "}


def line(alert: AlertRaised) -> str:
    """One line of the desk's feed (codes and ids only: events carry no PII)."""
    return (
        f"{alert.occurred_at:%Y-%m-%d %H:%M:%S} {TAGS[alert.severity]} "
        f"{alert.rule:<28} loan {alert.loan_id:<16} alert {alert.alert_id} "
        f"→ {alert.recommended_action}: {alert.reason}"
    )


async def follow(
    bootstrap: str,
    *,
    from_beginning: bool,
    out: Callable[[str], None],
    until: Callable[[AlertRaised], bool] | None = None,
) -> int:
    """Print alerts until cancelled (or until one matching `until` is printed); returns
    how many were printed."""
    consumer = AIOKafkaConsumer(
        ALERT_RAISED,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    printed = 0
    try:
        async for record in consumer:
            try:
                alert = AlertRaised.model_validate_json(record.value or b"")
            except ValidationError:
                continue  # not an alert of ours; the workers dead-letter such records
            out(line(alert))
            printed += 1
            if until is not None and until(alert):
                break
    finally:
        await consumer.stop()
    return printed


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.alerts.tail", description=__doc__)
    parser.add_argument("--from-beginning", action="store_true", help="replay the whole topic")
    args = parser.parse_args(argv)
    bootstrap = AlertsSettings().kafka_bootstrap_servers
    # Ctrl-C is how one stops following.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow(bootstrap, from_beginning=args.from_beginning, out=print))


if __name__ == "__main__":
    main(sys.argv[1:])
