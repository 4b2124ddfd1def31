"""The asyncpg connections under the engine's pooled connections, for the capture's one
statement (services/visits/append.py): the same pool, limits and connections as the API's
sessions, without a session's or a SQLAlchemy connection's bookkeeping per request.

A capture's connection is not given back to the pool after each statement: checking one
out and in again (SQLAlchemy's pool, in its greenlet) cost a capture as much as its
statement's own Python. The API keeps those it took, up to `MAX_KEPT` idle, for the next
captures (`CaptureConnections`), and gives them back to the pool at shutdown. The pool
still counts them as checked out, so the sessions never get more than the pool allows.

A connection is used outside any transaction (autocommit: the statement is atomic on its
own). An error is raised as SQLAlchemy raises it (a `DBAPIError` carrying asyncpg's, with
its SQLSTATE), so that the problem handlers (shared/errors.py) answer it as any other: a
connection found dead is dropped (invalidated in the pool), and the request is answered
503 with Retry-After, which the app retries under the same Idempotency-Key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

# As many as the captures in flight at once on a busy API process (the bench's 16
# connections): more idle ones are given back to the pool.
MAX_KEPT = 16


class CaptureConnections:
    def __init__(self, engine: AsyncEngine, max_kept: int = MAX_KEPT) -> None:
        self._engine = engine
        self._max_kept = max_kept
        self._idle: list[PoolProxiedConnection] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        pooled = await self._take()
        driver: asyncpg.Connection = pooled.driver_connection
        try:
            yield driver
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            dead = driver.is_closed()
            if dead:
                await greenlet_spawn(pooled.invalidate, exc)
            else:
                await self._keep(pooled)
            # No statement nor values in it: they may carry borrower data.
            raise DBAPIError(None, None, exc, connection_invalidated=dead) from exc
        except BaseException:
            # Cancelled mid-statement (the client went away), or a bug: the connection may
            # still be busy with the statement, so it is closed, not used again.
            await greenlet_spawn(pooled.invalidate)
            raise
        else:
            await self._keep(pooled)

    async def _take(self) -> PoolProxiedConnection:
        while self._idle:
            pooled = self._idle.pop()
            driver: asyncpg.Connection = pooled.driver_connection
            if not driver.is_closed():
                return pooled
            # Closed while kept (the database restarted): dropped, and the next one tried.
            await greenlet_spawn(pooled.invalidate)
        return await self._engine.raw_connection()

    async def _keep(self, pooled: PoolProxiedConnection) -> None:
        if len(self._idle) < self._max_kept and pooled.is_valid:
            self._idle.append(pooled)
        else:
            await _give_back(pooled)

    async def close(self) -> None:
        """Give every kept connection back to the pool (before the engine is disposed)."""
        kept, self._idle = self._idle, []
        for pooled in kept:
            await _give_back(pooled)


async def _give_back(pooled: PoolProxiedConnection) -> None:
    # Checked in (or closed past the pool's size) in SQLAlchemy's greenlet, as everywhere.
    await greenlet_spawn(pooled.close)
