"""Which failures a consumer waits out and which it treats as bugs (shared/failures.py).

The PostgreSQL errors are built the way SQLAlchemy's asyncpg dialect raises them: asyncpg's
exception, adapted to a DB-API error carrying the SQLSTATE, wrapped in a DBAPIError.
"""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    UnknownTopicOrPartitionError,
)
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.exc import DBAPIError

from shared.failures import backoff_seconds, is_transient, sqlstate_of, transient_cause
from shared.service_client import OwnerUnavailable


def as_sqlalchemy_raises(error: asyncpg.PostgresError) -> DBAPIError:
    """`error` as the consumer sees it when asyncpg raised it under SQLAlchemy."""
    dbapi = PGDialect_asyncpg.import_dbapi()  # type: ignore[no-untyped-call]
    try:
        try:
            raise error
        except asyncpg.PostgresError as raw:
            raise dbapi.Error(str(raw), raw) from raw
    except dbapi.Error as adapted:
        wrapped = DBAPIError.instance("SELECT 1", None, adapted, dbapi.Error)
        assert isinstance(wrapped, DBAPIError)
        wrapped.__cause__ = adapted
        return wrapped


def postgres_error(sqlstate: str) -> asyncpg.PostgresError:
    """asyncpg's exception class for `sqlstate`, as the server's answer would build it."""
    cls = asyncpg.exceptions.PostgresError.get_message_class_for_sqlstate(sqlstate)
    return cls(f"server said {sqlstate}")


TRANSIENT = {
    "53300": "too many clients already",
    "57P03": "the database system is starting up",
    "57P01": "terminating connection due to administrator command",
    "57P02": "crash shutdown",
    "08006": "connection failure",
    "08001": "could not connect",
    "53100": "disk full",
    "40001": "could not serialize access",
    "40P01": "deadlock detected",
    "55P03": "lock timeout",
    "57014": "statement timeout",
    "25P03": "idle-in-transaction timeout",
}
BUGS = {
    "23505": "unique violation",
    "23503": "foreign key violation",
    "22001": "string too long",
    "22003": "numeric out of range",
    "42P01": "undefined table",
    "42703": "undefined column",
}


@pytest.mark.parametrize("sqlstate", sorted(TRANSIENT))
def test_busy_or_restarting_database_is_transient(sqlstate: str) -> None:
    error = as_sqlalchemy_raises(postgres_error(sqlstate))
    assert type(error) is DBAPIError  # what the consumer saw: not an OperationalError
    assert sqlstate_of(error) == sqlstate
    assert transient_cause(error) == f"sqlstate {sqlstate}"


@pytest.mark.parametrize("sqlstate", sorted(BUGS))
def test_a_definite_answer_from_postgres_is_not_retried_forever(sqlstate: str) -> None:
    error = as_sqlalchemy_raises(postgres_error(sqlstate))
    assert sqlstate_of(error) == sqlstate
    assert not is_transient(error)


def test_the_sqlstate_is_found_on_any_layer() -> None:
    raw = postgres_error("53300")
    assert sqlstate_of(raw) == "53300"
    assert sqlstate_of(as_sqlalchemy_raises(raw).orig) == "53300"  # type: ignore[arg-type]
    assert sqlstate_of(KeyError("x")) is None


def test_causes_are_named_apart_so_each_counts_its_own_retries() -> None:
    causes = {
        transient_cause(as_sqlalchemy_raises(postgres_error("53300"))),
        transient_cause(as_sqlalchemy_raises(postgres_error("57P03"))),
        transient_cause(ConnectionRefusedError(111, "refused")),
        transient_cause(OwnerUnavailable("scheduler down")),
    }
    assert len(causes) == 4 and None not in causes


def test_lost_connections_networks_and_owner_services_are_transient() -> None:
    dropped = DBAPIError("SELECT 1", None, Exception("connection is closed"))
    dropped.connection_invalidated = True
    assert transient_cause(dropped) == "database connection lost"
    assert is_transient(ConnectionRefusedError(111, "refused"))
    assert is_transient(TimeoutError())
    assert is_transient(httpx.ConnectError("refused"))
    assert is_transient(OwnerUnavailable("scheduler down"))


def test_broker_outages_are_transient_but_a_refused_record_is_not() -> None:
    assert is_transient(KafkaConnectionError("gone"))
    assert is_transient(KafkaTimeoutError())
    assert is_transient(UnknownTopicOrPartitionError())
    assert not is_transient(MessageSizeTooLargeError())


@pytest.mark.parametrize("bug", [KeyError("loan"), ValueError("bad"), AttributeError("x")])
def test_handler_bugs_are_not_transient(bug: Exception) -> None:
    assert transient_cause(bug) is None


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff_seconds(n, base=0.5, cap=10.0) for n in range(1, 10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == 10.0
    assert delays == sorted(delays)
    assert backoff_seconds(10_000, base=0.5, cap=10.0) == 10.0
