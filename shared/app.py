"""FastAPI application factory shared by the services: problem+json, request ids and
response headers, an OpenAPI document that lists every answer, health and readiness, and
the database engine on `app.state`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db import engine_for, make_session_factory, unit_of_work
from shared.errors import install_problem_handlers
from shared.health import ReadinessCheck, readiness_response
from shared.middleware import RequestContextMiddleware
from shared.openapi import install_openapi
from shared.settings import ServiceSettings

Hook = Callable[[FastAPI], Awaitable[None]]


def create_app(
    settings: ServiceSettings,
    *,
    title: str,
    routers: list[APIRouter],
    on_startup: Hook | None = None,
    on_shutdown: Hook | None = None,
    body_limits: Mapping[str, int] | None = None,
    readiness: ReadinessCheck | None = None,
    engine_factory: Callable[[], AsyncEngine] | None = None,
) -> FastAPI:
    """`body_limits`: request body limits of particular routes (`"POST /v1/loans/import"`)
    other than `settings.max_body_bytes`. `engine_factory`: the service's own database
    engine (pool size, pings) instead of `engine_for(settings)`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = engine_factory() if engine_factory is not None else engine_for(settings)
        app.state.engine = engine
        app.state.sessions = make_session_factory(engine)
        if on_startup is not None:
            await on_startup(app)
        try:
            yield
        finally:
            if on_shutdown is not None:
                await on_shutdown(app)
            await engine.dispose()

    app = FastAPI(title=title, version="1.0.0", lifespan=lifespan)
    app.state.settings = settings
    install_problem_handlers(app)
    app.add_middleware(RequestContextMiddleware, settings=settings, body_limits=body_limits)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        # Database, broker and, through `readiness`, the service's workers (shared/health.py).
        return await readiness_response(
            request.app.state.engine, settings.kafka_bootstrap_servers, readiness
        )

    for router in routers:
        app.include_router(router)
    install_openapi(app, routers)
    return app


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request owns the transaction: commit on success, roll back on any error."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with unit_of_work(sessions) as session:
        yield session


# scope="function": the commit happens before the response is sent, so a 2xx means durable.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
