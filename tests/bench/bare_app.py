"""The bench's yardstick for `POST /v1/visits`: a bare FastAPI endpoint that stores the same
request body with one asyncpg INSERT into a table of the same PostgreSQL, and nothing else
(no token, no validation beyond JSON, no idempotency, no chain, no outbox).

Started by the bench as its own uvicorn process with the visits API's flags
(`uvicorn tests.bench.bare_app:app`), so the ratio of the two rates is what the visits API
costs beyond what any FastAPI + asyncpg insert costs on this machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, Header, Request

TABLE = "public.bench_bare_visits"
CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    request_key text PRIMARY KEY,
    body jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
)
"""
# As many connections as wrk has: the yardstick never waits for one.
POOL_SIZE = 16


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    dsn = os.environ["DATABASE_URL"].replace("+asyncpg", "")
    pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
    await pool.execute(CREATE)
    app.state.pool = pool
    try:
        yield
    finally:
        await pool.close()


app = FastAPI(title="bench: bare insert", lifespan=_lifespan)


@app.post("/v1/visits", status_code=201)
async def insert(
    body: dict[str, Any], request: Request, idempotency_key: str = Header()
) -> dict[str, str]:
    pool: asyncpg.Pool = request.app.state.pool
    await pool.execute(
        f"INSERT INTO {TABLE} (request_key, body) VALUES ($1, $2::jsonb)",
        idempotency_key,
        json.dumps(body),
    )
    return {"request_key": idempotency_key}
