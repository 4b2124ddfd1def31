"""Database engine, per-schema metadata and the unit of work.

Each service owns one PostgreSQL schema; its tables hang off a MetaData bound to that
schema so nothing can accidentally reference another service's tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.settings import ServiceSettings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def schema_metadata(schema: str) -> MetaData:
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


@dataclass(frozen=True)
class SessionLimits:
    """How long one of our sessions may wait or sit idle, set on every connection.

    Without them a worker stopped mid-batch (SIGSTOP, a long GC pause, a frozen VM) keeps
    its transaction and row locks open, and the replica that took over its partitions waits
    on those locks for as long as the first one stays stopped. With them the waiter gives up
    after `lock_timeout` (SQLSTATE 55P03, retried as transient) and the server ends the idle
    transaction after `idle_in_transaction`, releasing its locks; its events are redelivered
    and the inbox makes that harmless. Milliseconds; 0 disables a limit.
    """

    lock_timeout_ms: int = 5_000
    idle_in_transaction_ms: int = 30_000
    statement_timeout_ms: int = 30_000

    def server_settings(self) -> dict[str, str]:
        return {
            "lock_timeout": str(self.lock_timeout_ms),
            "idle_in_transaction_session_timeout": str(self.idle_in_transaction_ms),
            "statement_timeout": str(self.statement_timeout_ms),
        }


def make_engine(
    database_url: str,
    *,
    pool_size: int = 5,
    limits: SessionLimits | None = None,
    pre_ping: bool = True,
) -> AsyncEngine:
    """`pre_ping`: test each connection with a round trip when it is taken from the pool,
    so a request never meets a connection the database dropped. A worker goes without:
    it takes one for every batch and every outbox poll, and the round trip was a tenth of
    the alerts worker's time waiting on the database; a connection it finds dropped is a
    transient failure its consumer, relay and sweeps retry (the pool then replaces it)."""
    # hide_parameters: a logged SQL error must not carry borrower data or visit notes.
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        pool_pre_ping=pre_ping,
        hide_parameters=True,
        connect_args={"server_settings": (limits or SessionLimits()).server_settings()},
    )


def engine_for(
    settings: ServiceSettings, *, pool_size: int = 5, pre_ping: bool = True
) -> AsyncEngine:
    """The engine of a service process, with the session limits of its settings."""
    limits = SessionLimits(
        lock_timeout_ms=settings.db_lock_timeout_ms,
        idle_in_transaction_ms=settings.db_idle_in_transaction_timeout_ms,
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )
    return make_engine(settings.database_url, pool_size=pool_size, limits=limits, pre_ping=pre_ping)


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: responses are built from objects after the commit.
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def unit_of_work(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: the state change, its outbox rows and its inbox row commit together."""
    async with sessions() as session, session.begin():
        yield session
