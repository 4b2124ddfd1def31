"""Visits REST API: mobile capture of visits and reading them back."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from services.visits import repository, service
from services.visits.models import Visit
from services.visits.schemas import VisitIn, VisitOut
from shared.app import SessionDep
from shared.auth import Principal, require_roles
from shared.errors import Problem
from shared.pagination import Page, decode_cursor, encode_cursor
from shared.service_client import ServiceClient

router = APIRouter(prefix="/v1")

FieldAgent = Annotated[Principal, Depends(require_roles("agent"))]
Reader = Annotated[Principal, Depends(require_roles("agent", "supervisor", "ops", "admin"))]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Chosen by the app per capture; scoped to the agent. Resend it on retry.",
    ),
]


def _scheduler(request: Request) -> ServiceClient:
    client: ServiceClient = request.app.state.scheduler
    return client


@router.post("/visits", response_model=VisitOut, status_code=201)
async def record_visit(
    body: VisitIn,
    idempotency_key: IdempotencyKey,
    session: SessionDep,
    request: Request,
    response: Response,
    who: FieldAgent,
) -> VisitOut:
    """Record a visit. A retry with the same key and body answers 201 with the first visit
    again (and `Idempotent-Replayed: true`), so the app sees one stable result."""
    visit, created = await service.record_visit(
        session,
        _scheduler(request),
        agent_id=who.sub,
        idempotency_key=idempotency_key,
        body=body,
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return service.visit_view(visit)


@router.get("/visits/{visit_id}", response_model=VisitOut)
async def get_visit(visit_id: uuid.UUID, session: SessionDep, who: Reader) -> VisitOut:
    visit = await repository.get_visit(session, visit_id)
    return service.visit_view(service.visible_to(visit, who.sub if who.is_agent else None))


@router.get("/visits", response_model=Page[VisitOut])
async def list_visits(
    session: SessionDep,
    who: Reader,
    loan_id: str | None = None,
    agent_id: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[VisitOut]:
    """Visits oldest first, by loan and/or agent; an agent always gets its own."""
    visits: list[Visit] = await repository.list_visits(
        session,
        agent_id=who.sub if who.is_agent else agent_id,
        loan_id=loan_id,
        after=_after(cursor) if cursor else None,
        limit=limit,
    )
    next_cursor = (
        encode_cursor(visits[-1].created_at, str(visits[-1].visit_id))
        if len(visits) == limit
        else None
    )
    return Page(items=[service.visit_view(v) for v in visits], next_cursor=next_cursor)


def _after(cursor: str) -> tuple[datetime, uuid.UUID]:
    created_at, ident = decode_cursor(cursor)
    # decode_cursor checks the shape only; a forged cursor must be a 422, not a 500.
    try:
        visit_id = uuid.UUID(ident)
    except ValueError:
        visit_id = None
    if visit_id is None or created_at.tzinfo is None:
        raise Problem(
            422,
            "Unprocessable Content",
            "cursor is not valid",
            errors=[{"field": "query.cursor", "message": "not a cursor from this API"}],
        )
    return created_at, visit_id
