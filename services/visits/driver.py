"""The asyncpg connection under one of the engine's pooled connections, for the capture's
one statement (services/visits/append.py): the same pool, limits and connections as the
API's sessions, without a session's or a SQLAlchemy connection's bookkeeping per request.

The connection is used outside any transaction (autocommit: the statement is atomic on
its own), so the pool's rollback when it is returned has nothing to do. An error is
raised as SQLAlchemy raises it (a `DBAPIError` carrying asyncpg's, with its SQLSTATE),
so that the problem handlers (shared/errors.py) answer it as any other: a connection
found dead is dropped from the pool, and the request is answered 503 with Retry-After.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    pooled = await engine.raw_connection()
    driver: asyncpg.Connection = pooled.driver_connection
    try:
        yield driver
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        dead = driver.is_closed()
        if dead:
            await greenlet_spawn(pooled.invalidate, exc)
        # No statement nor values in it: they may carry borrower data.
        raise DBAPIError(None, None, exc, connection_invalidated=dead) from exc
    finally:
        # A returned connection goes back to the pool's queue (or is closed past its
        # overflow, which awaits the driver): in SQLAlchemy's greenlet, as everywhere.
        await greenlet_spawn(pooled.close)
