"""The desk's lifecycle of an alert as a transition table: pure, no I/O.

    open ─ack─▶ acknowledged ─start─▶ in_progress ─resolve─▶ resolved
      │              │                     │
      └──────────────┴──── dismiss ────────┴──────────────▶ dismissed

An alert is resolved once someone has taken it (acknowledged or in progress), with the
action taken; a false alarm is dismissed from any active state, with its reason. The
service resolves an alert by itself only on a cure (`triage.Triage.cure`).
"""

from __future__ import annotations

from typing import Final

from shared.vocabulary import AlertStatus

OPEN, ACKED, WORKING = AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED, AlertStatus.IN_PROGRESS
RESOLVED, DISMISSED = AlertStatus.RESOLVED, AlertStatus.DISMISSED

# (from, to) -> the name of the move, as history records it.
TRANSITIONS: Final[dict[tuple[AlertStatus, AlertStatus], str]] = {
    (OPEN, ACKED): "acknowledged",
    (ACKED, WORKING): "started",
    (ACKED, RESOLVED): "resolved",
    (WORKING, RESOLVED): "resolved",
    (OPEN, DISMISSED): "dismissed",
    (ACKED, DISMISSED): "dismissed",
    (WORKING, DISMISSED): "dismissed",
}


class TransitionRefused(ValueError):
    """The table has no such move from where the alert stands."""


def move(current: AlertStatus, to: AlertStatus) -> str:
    """The name of the move from `current` to `to`, or TransitionRefused saying what is
    allowed from `current`."""
    name = TRANSITIONS.get((current, to))
    if name is None:
        allowed = sorted(str(b) for a, b in TRANSITIONS if a == current)
        options = ", ".join(allowed) if allowed else "nothing (it is closed)"
        raise TransitionRefused(
            f"an alert that is {current} cannot become {to}; it can become {options}"
        )
    return name
