"""Visits REST API: mobile capture of visits and reading them back."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import AwareDatetime
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.visits import reports, repository, service
from services.visits.repository import VisitFilter
from services.visits.schemas import (
    ChainProof,
    ChainVerification,
    ThirdPartyReportIn,
    ThirdPartyReportOut,
    VisitIn,
    VisitOut,
)
from shared.app import SessionDep
from shared.auth import Principal, require_roles
from shared.db import unit_of_work
from shared.errors import not_found
from shared.openapi import problems
from shared.pagination import CursorText, Page
from shared.service_client import ServiceClient
from shared.validation import Identifier
from shared.vocabulary import VisitMethod, VisitOutcome

router = APIRouter(prefix="/v1")

# Agents record their own visits; supervisors may record one on their region's loans.
Capturer = Annotated[Principal, Depends(require_roles("agent", "supervisor"))]
# Who reads which visits is the repository's (`READERS`, `AUDITORS`, `visible_visits`).
Reader = Annotated[Principal, Depends(require_roles(*repository.READERS))]
# GPS/telematics platforms, ride-hailing registries, credit bureaus.
Partner = Annotated[Principal, Depends(require_roles("integration"))]
Auditor = Annotated[Principal, Depends(require_roles(*repository.AUDITORS))]
# Visible ASCII only: the key is stored and compared byte for byte, and control or
# non-ASCII bytes in a header are someone probing, not an app.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description=(
            "Chosen by the app per capture (1 to 255 visible ASCII characters); scoped to "
            "the agent. Resend it on retry. It does not expire: a queued capture sent days "
            "later still replays the visit it recorded, and the key cannot be reused for "
            "another visit."
        ),
    ),
]


def _scheduler(request: Request) -> ServiceClient:
    client: ServiceClient = request.app.state.scheduler
    return client


@router.post("/visits", response_model=VisitOut, status_code=201, responses=problems(404, 409))
async def record_visit(
    body: VisitIn,
    idempotency_key: IdempotencyKey,
    request: Request,
    response: Response,
    who: Capturer,
) -> VisitOut:
    """Record a visit. A retry with the same key and body answers 201 with the first visit
    again (and `Idempotent-Replayed: true`), so the app sees one stable result.

    Rules per method and outcome (a 422 names every field at fault): a field visit needs
    `geo` and `findings.vehicle_sighted` (true or false); a phone visit cannot claim
    `vehicle_sighted: true`; a `borrower_unreachable` visit claims nothing the borrower
    would have to show or tell (identity, employment, income, documents, repayment
    difficulty), nor, on a phone call, anything about the car; `third_party` visits come
    only through `/v1/third-party-reports`."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with unit_of_work(sessions) as session:
        visit = await service.earlier_capture(session, who.sub, idempotency_key, body)
    created = False
    if visit is None:
        # After the replay lookup: a capture recorded under earlier rules still replays.
        service.check_capture_rules(body)
        # The scheduler is asked while no transaction is open: a slow owner must not hold
        # a database connection and its locks.
        await service.authorize_capture(_scheduler(request), who, body)
        async with unit_of_work(sessions) as session:
            visit, created = await service.record_visit(
                session, agent_id=who.sub, idempotency_key=idempotency_key, body=body
            )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return service.visit_view(visit)


# Declared before `/visits/{visit_id}`, which would otherwise read `verify` as a visit id.
@router.get("/visits/verify", response_model=ChainVerification)
async def verify_visits(
    session: SessionDep,
    _: Auditor,
    loan_id: Annotated[Identifier | None, Query()] = None,
) -> ChainVerification:
    """Recompute the tamper-evident chain of the loan's visits (all loans without
    `loan_id`) from the stored rows and report the first entry that does not hold: a visit
    altered, removed or inserted in the database behind the service's back. A broken chain
    is a finding (`intact: false`), not an error. The same check as
    `python -m services.visits.verify`."""
    return await service.verify_chains(session, loan_id)


@router.get("/visits/{visit_id}/proof", response_model=ChainProof, responses=problems(404))
async def visit_proof(visit_id: uuid.UUID, session: SessionDep, who: Reader) -> ChainProof:
    """The visit's entry in its loan's tamper-evident chain."""
    visit = await repository.get_visit_visible_to(session, visit_id, who)
    if visit is None:
        raise not_found("visit")
    return await service.proof_of(session, visit)


@router.get("/visits/{visit_id}", response_model=VisitOut, responses=problems(404))
async def get_visit(visit_id: uuid.UUID, session: SessionDep, who: Reader) -> VisitOut:
    visit = await repository.get_visit_visible_to(session, visit_id, who)
    if visit is None:
        raise not_found("visit")
    return service.visit_view(visit)


@router.get("/visits", response_model=Page[VisitOut])
async def list_visits(
    session: SessionDep,
    who: Reader,
    loan_id: Annotated[Identifier | None, Query()] = None,
    agent_id: Annotated[Identifier | None, Query()] = None,
    method: Annotated[VisitMethod | None, Query()] = None,
    outcome: Annotated[VisitOutcome | None, Query()] = None,
    started_from: Annotated[
        AwareDatetime | None, Query(description="Visits that started at or after this instant.")
    ] = None,
    started_before: Annotated[
        AwareDatetime | None, Query(description="Visits that started before this instant.")
    ] = None,
    cursor: Annotated[CursorText | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[VisitOut]:
    """Visits in the order recorded, filtered by loan, agent, method, outcome and when they
    started; an agent always gets its own."""
    return await repository.list_visits(
        session,
        who,
        VisitFilter(
            agent_id=agent_id,
            loan_id=loan_id,
            method=method,
            outcome=outcome,
            started_from=started_from,
            started_before=started_before,
        ),
        cursor=cursor,
        limit=limit,
        to_item=service.visit_view,
    )


@router.post(
    "/third-party-reports",
    response_model=ThirdPartyReportOut,
    status_code=201,
    responses=problems(403, 404, 409),
)
async def report_third_party(
    body: ThirdPartyReportIn, request: Request, response: Response, who: Partner
) -> ThirdPartyReportOut:
    """A partner reports an observation on a loan's car or borrower. It becomes a visit of
    method `third_party` (agent_id = the partner) whose findings say what the observation
    shows: `device_offline` and `geofence_exit` the car not sighted, its condition unknown;
    `dwell_at_pawn_lot` an encumbrance; `ride_hailing_registration` ride-hailing usage;
    `court_judgment` repayment difficulty; `gps_position` nothing (kept as evidence). It is
    published on `visit-completed` like any visit. Resending the same `report_id` answers
    201 with the first result (and `Idempotent-Replayed: true`); another report under the
    same id is a 409. `partner` must be the token's subject (else 403)."""
    reports.authorize_report(who, body)
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with unit_of_work(sessions) as session:
        report = await reports.earlier_report(session, body)
    created = False
    if report is None:
        await reports.confirm_loan(_scheduler(request), body.loan_id)
        async with unit_of_work(sessions) as session:
            report, created = await reports.record_report(session, body)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return report
