"""Which failures are worth waiting out, and which are bugs.

A consumer retries a *transient* failure (the database restarting or full, a lock held by a
hung replica, the broker or an owner service unreachable) for as long as it takes, and gives a
*bug* (the same event failing the same way for a reason in our code or data) a few attempts
before dead-lettering it. Mistaking one for the other either dead-letters good events during an
outage or blocks a partition forever behind a bad one, so PostgreSQL errors are classified by
their SQLSTATE, not by the Python class the driver happens to wrap them in.
"""

from __future__ import annotations

import httpx
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from shared.service_client import OwnerUnavailable

# SQLSTATE classes (first two characters) that mean "the server cannot serve us right now".
TRANSIENT_SQLSTATE_CLASSES = frozenset(
    {
        "08",  # connection exception (refused, lost, cannot connect now)
        "53",  # insufficient resources: 53300 too many clients, out of memory, disk full
    }
)

# Single SQLSTATEs that are transient although their class is not.
TRANSIENT_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: "the database system is starting up"
        "57P05",  # idle_session_timeout
        "57014",  # query_canceled: statement_timeout, or a cancel from a lock timeout
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available: lock_timeout while a hung replica holds the row
        "25P03",  # idle_in_transaction_session_timeout: our own session was ended
    }
)


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE PostgreSQL answered with, wherever the driver wrapped it.

    SQLAlchemy raises a DBAPIError whose `orig` is asyncpg's adapted error (which carries
    `sqlstate`), itself raised from asyncpg's own exception; any layer may be the one we get.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and state:
            return state
        orig = getattr(current, "orig", None)
        pending.extend(
            [
                current.__context__,
                current.__cause__,
                orig if isinstance(orig, BaseException) else None,
            ]
        )
    return None


def transient_cause(exc: BaseException) -> str | None:
    """A short name of the transient condition behind `exc`, or None when it looks like a bug.

    The name is what retries are counted by ("sqlstate 53300", "database connection lost",
    "broker unreachable", ...), so a burst of one cause never spends another cause's budget.
    """
    state = sqlstate_of(exc)
    if state is not None:
        if state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in TRANSIENT_SQLSTATES:
            return f"sqlstate {state}"
        # A definite answer from PostgreSQL (constraint, syntax, data): retrying cannot help.
        return None
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return "database connection lost"
    if isinstance(exc, OperationalError):
        return "database unavailable"
    if isinstance(exc, PoolTimeoutError):
        return "database pool exhausted"
    if isinstance(exc, OwnerUnavailable):
        return "owner service unavailable"
    if isinstance(exc, httpx.TransportError):
        return "owner service unreachable"
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError) or (
        isinstance(exc, KafkaError) and exc.retriable
    ):
        return "broker unavailable"
    # OSError covers ConnectionError and TimeoutError (sockets to the database, broker, owner).
    if isinstance(exc, OSError):
        return f"network: {type(exc).__name__}"
    return None


def is_transient(exc: BaseException) -> bool:
    return transient_cause(exc) is not None


def backoff_seconds(attempt: int, *, base: float, cap: float = 10.0) -> float:
    """Exponential backoff for the `attempt`-th retry of one cause (1-based), capped."""
    exponent = min(max(attempt - 1, 0), 30)
    return min(cap, base * 2.0**exponent)
