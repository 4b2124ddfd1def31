"""Visits REST API: mobile capture of visits and their evidence, and reading them back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import AwareDatetime
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.visits import drafts, evidence, reports, repository, review, service
from services.visits.driver import CaptureConnections
from services.visits.evidence_store import EvidenceStore
from services.visits.evidence_types import ALLOWED_TYPES, EvidenceKind
from services.visits.grants import TaskGrants
from services.visits.rate_limits import RateLimiter
from services.visits.repository import VisitFilter
from services.visits.schemas import (
    ChainProof,
    ChainVerification,
    CorrectionIn,
    DraftIn,
    DraftOut,
    EvidenceOut,
    ReviewIn,
    ReviewState,
    ThirdPartyReportIn,
    ThirdPartyReportOut,
    VisitIn,
    VisitOut,
)
from shared.app import SessionDep
from shared.auth import Principal, RoleGuard, require_roles
from shared.db import unit_of_work
from shared.errors import Problem, not_found
from shared.openapi import problem, problems
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
# The checker of maker-checker.
Reviewer = Annotated[Principal, Depends(require_roles("supervisor"))]
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
            "the agent. Resend it on retry. It is honoured for `IDEMPOTENCY_KEY_DAYS` (7) "
            "after the capture; later the same key records a new capture, unless the body "
            "carries the client-generated `visit_id` it was first sent with, which always "
            "replays."
        ),
    ),
]


# Its body is a photo or scan, larger than a JSON body (VisitsSettings.max_evidence_bytes);
# the request middleware counts the bytes as they stream in.
EVIDENCE_ROUTE = "POST /v1/evidence"
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_EVIDENCE_CONTENT: dict[str, Any] = {media: _BINARY for media in ALLOWED_TYPES}
_EVIDENCE_BODY = {
    "required": True,
    "description": (
        "The file's bytes, as the `Content-Type` declares; the bytes must carry that type's "
        "signature (JPEG, PNG, HEIC, PDF)."
    ),
    "content": _EVIDENCE_CONTENT,
}
RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: problem(429, "Too many requests from this caller for now; see Retry-After.")
}


def _scheduler(request: Request) -> ServiceClient:
    client: ServiceClient = request.app.state.scheduler
    return client


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return sessions


@asynccontextmanager
async def _capture_session(
    sessions: async_sessionmaker[AsyncSession], *, single_statement: bool
) -> AsyncIterator[AsyncSession]:
    """The session a capture is recorded in. A capture without evidence writes with one
    statement (services/visits/append.py), atomic on its own: it runs in autocommit, which
    spares the BEGIN and COMMIT round trips (a replay's reads after it need no transaction
    either). With evidence, its rows are locked, checked and attached around that
    statement: one transaction."""
    if not single_statement:
        async with unit_of_work(sessions) as session:
            yield session
        return
    async with sessions() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


def _grants(request: Request) -> TaskGrants:
    grants: TaskGrants = request.app.state.task_grants
    return grants


def _store(request: Request) -> EvidenceStore:
    store: EvidenceStore = request.app.state.evidence_store
    return store


class _LimitedGuard(RoleGuard):
    """A dependency: the capturing caller (agent or supervisor, else 403), or a 429 once it
    has used up its share of this route class (rate_limits). Run before the body is
    validated or, for an upload, read. One dependency, not the role guard and a limit
    check on it: each level FastAPI resolves costs a capture CPU. A RoleGuard, so the
    OpenAPI document lists its roles. A coroutine although it does no I/O: FastAPI runs a
    plain function in a worker thread, a hand-off per request for a dictionary lookup."""

    def __init__(self, limiter: str) -> None:
        super().__init__(("agent", "supervisor"))
        self._limiter = limiter

    async def __call__(self, request: Request) -> Principal:
        who = await super().__call__(request)
        limits: RateLimiter = getattr(request.app.state, self._limiter)
        limits.check(who.sub)
        return who


LimitedCapturer = Annotated[Principal, Depends(_LimitedGuard("capture_limits"))]
LimitedUploader = Annotated[Principal, Depends(_LimitedGuard("upload_limits"))]


@router.post(
    "/visits",
    response_model=VisitOut,
    status_code=201,
    responses={**problems(403, 404, 409), **RATE_LIMITED},
)
async def record_visit(
    body: VisitIn,
    idempotency_key: IdempotencyKey,
    request: Request,
    who: LimitedCapturer,
) -> Response:
    """Record a visit. A retry with the same key and body answers 201 with the first visit
    again (and `Idempotent-Replayed: true`), so the app sees one stable result.

    Rules per method and outcome (a 422 names every field at fault): a field visit needs
    `geo` and `findings.vehicle_sighted` (true or false); a phone visit cannot claim
    `vehicle_sighted: true`; a `borrower_unreachable` visit claims nothing the borrower
    would have to show or tell (identity, employment, income, documents, repayment
    difficulty), nor, on a phone call, anything about the car; `third_party` visits come
    only through `/v1/third-party-reports`.

    `evidence` lists photos and scans uploaded first with `POST /v1/evidence` by the same
    caller and not on another visit (else a 422 naming `body.evidence[i]`); a completed
    field visit lists at least one photo (`body.evidence`). They are attached to the visit
    and its chain entry commits to their SHA-256s.

    `visit_id` may be chosen by the device (offline-first): resending it replays the visit
    whatever the key, and even after the key has expired; another agent's id is a 409.

    The visit is published on `visit-completed` at once; its supervisor reviews it after
    (`POST /v1/visits/{visit_id}/review`); it is `pending` until then.

    At most `VISIT_CAPTURES_PER_MINUTE` (60) a minute per caller and API process: a 429
    with Retry-After past it."""
    sessions = _sessions(request)
    try:
        # Before any transaction opens: the scheduler, when it must be asked, is asked with
        # no database connection held (a slow owner must not hold one and its locks).
        service.check_capture_rules(body)
        region = await service.authorize_capture(
            _scheduler(request), who, body, _grants(request), request.app.state.loan_regions
        )
    except Problem as refused:
        # A retry of a recorded visit replays whatever the rules or the scheduler say now:
        # the visit may have completed its task since, the scheduler may be down.
        async with unit_of_work(sessions) as session:
            visit = await service.earlier_capture(session, who.sub, idempotency_key, body)
            view = await service.view_of(session, visit) if visit is not None else None
        if view is None:
            raise refused from None
        return _created(view, replayed=True)
    # The insert finds a retry by its key or id (service.record_visit).
    if not body.evidence:
        connections: CaptureConnections = request.app.state.capture_connections
        async with connections.connection() as connection:
            captured = await service.record_capture(
                connection,
                agent_id=who.sub,
                idempotency_key=idempotency_key,
                body=body,
                region=region,
            )
        if captured is not None:
            return _created(captured)
        # A key taken: a retry (or a task visited already), told apart in a session below.
    async with _capture_session(sessions, single_statement=not body.evidence) as session:
        recorded = await service.record_visit(
            session, agent_id=who.sub, idempotency_key=idempotency_key, body=body, region=region
        )
        if recorded.created:
            return _created(recorded.view())
        view = await service.view_of(session, recorded.visit)
    return _created(view, replayed=True)


def _created(view: VisitOut, *, replayed: bool = False) -> Response:
    """The 201 of a capture, serialised once by pydantic: returned as a response, it is not
    validated against `response_model` again (which only documents it)."""
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(
        view.model_dump_json(), status_code=201, media_type="application/json", headers=headers
    )


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


@router.get("/visits/{visit_id}/proof", response_model=ChainProof, responses=problems(403, 404))
async def visit_proof(visit_id: uuid.UUID, session: SessionDep, who: Reader) -> ChainProof:
    """The visit's entry in its loan's tamper-evident chain."""
    visit = await repository.get_visit_visible_to(session, visit_id, who)
    if visit is None:
        raise not_found("visit")
    return await service.proof_of(session, visit)


@router.get("/visits/{visit_id}", response_model=VisitOut, responses=problems(403, 404))
async def get_visit(visit_id: uuid.UUID, session: SessionDep, who: Reader) -> VisitOut:
    visit = await repository.get_visit_visible_to(session, visit_id, who)
    if visit is None:
        raise not_found("visit")
    return await service.view_of(session, visit)


@router.get("/visits", response_model=Page[VisitOut], responses=problems(403))
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
    review_state: Annotated[
        ReviewState | None,
        Query(description="`pending` is a supervisor's queue, `returned` an agent's to-do."),
    ] = None,
    cursor: Annotated[CursorText | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[VisitOut]:
    """Visits in the order recorded, filtered by loan, agent, method, outcome, review state
    and when they started; an agent always gets its own, a supervisor its region's. Every
    version of a corrected visit is listed (`superseded` ones too)."""
    page = await repository.list_visits(
        session,
        who,
        VisitFilter(
            agent_id=agent_id,
            loan_id=loan_id,
            method=method,
            outcome=outcome,
            started_from=started_from,
            started_before=started_before,
            review_state=review_state,
        ),
        cursor=cursor,
        limit=limit,
        to_item=lambda visit: visit,
    )
    return Page(items=await service.views_of(session, page.items), next_cursor=page.next_cursor)


@router.post(
    "/visits/{visit_id}/review",
    response_model=VisitOut,
    responses=problems(403, 404, 409),
)
async def review_visit(
    visit_id: uuid.UUID, body: ReviewIn, request: Request, response: Response, who: Reviewer
) -> VisitOut:
    """The supervisor of the visit's region approves the version or returns it to its agent
    (`reason` required to return). Not a visit the supervisor recorded itself (403); another
    region's visit looks absent (404); a version is reviewed once (409; the same decision
    resent by the same supervisor answers 200 with `Idempotent-Replayed: true`), and a
    superseded version not at all (409). The decision is chained (see `/v1/visits/verify`).
    It publishes nothing: the visit was published when it was submitted."""
    async with unit_of_work(_sessions(request)) as session:
        visit, decided = await review.review_visit(session, who, visit_id, body)
        view = await service.view_of(session, visit)
    if not decided:
        response.headers["Idempotent-Replayed"] = "true"
    return view


@router.post(
    "/visits/{visit_id}/corrections",
    response_model=VisitOut,
    status_code=201,
    responses={**problems(403, 404, 409), **RATE_LIMITED},
)
async def correct_visit(
    visit_id: uuid.UUID,
    body: CorrectionIn,
    idempotency_key: IdempotencyKey,
    request: Request,
    response: Response,
    who: LimitedCapturer,
) -> VisitOut:
    """A submitted visit is immutable: its agent corrects it with a new version (the next
    `version`, `corrects_visit_id` = this one), checked by the capture rules, chained and
    published on `visit-completed` like any visit, with the corrected version's loan, task
    and method. The corrected version becomes `superseded` and stays provable. `evidence`
    may list the corrected version's photos and scans again (they are carried over).

    Only the visit's own agent (403 for a reader who is not; 404 for anyone else); a
    `pending` or `returned` version only: a superseded one is a 409 (correct the latest),
    an approved one is final (409). A retry with the same key and body answers 201 with
    the same version (`Idempotent-Replayed: true`)."""
    async with unit_of_work(_sessions(request)) as session:
        visit, created = await review.correct_visit(session, who, visit_id, idempotency_key, body)
        view = await service.view_of(session, visit)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return view


@router.put(
    "/visit-drafts/{visit_id}",
    response_model=DraftOut,
    responses=problems(403, 404, 409),
)
async def save_draft(
    visit_id: uuid.UUID, body: DraftIn, request: Request, who: Capturer
) -> DraftOut:
    """Save an unfinished visit under the id the device chose (create or replace it): any
    of a capture's fields, checked for shape only. It is the caller's alone (another's
    looks absent), unchained and unpublished until submitted. A submitted id is a 409."""
    async with unit_of_work(_sessions(request)) as session:
        return drafts.draft_view(await drafts.save(session, who.sub, visit_id, body))


@router.get("/visit-drafts", response_model=Page[DraftOut], responses=problems(403))
async def list_drafts(
    session: SessionDep,
    who: Capturer,
    cursor: Annotated[CursorText | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[DraftOut]:
    """The caller's own drafts, in the order created. Drafts untouched for
    `DRAFT_RETENTION_DAYS` (30) are purged."""
    page = await repository.list_drafts(session, who.sub, cursor=cursor, limit=limit)
    return Page(items=[drafts.draft_view(d) for d in page.items], next_cursor=page.next_cursor)


@router.get("/visit-drafts/{visit_id}", response_model=DraftOut, responses=problems(403, 404))
async def get_draft(visit_id: uuid.UUID, session: SessionDep, who: Capturer) -> DraftOut:
    draft = await repository.get_draft(session, who.sub, visit_id)
    if draft is None:
        raise not_found("draft")
    return drafts.draft_view(draft)


@router.delete(
    "/visit-drafts/{visit_id}",
    status_code=204,
    response_class=Response,
    responses=problems(403, 404),
)
async def delete_draft(visit_id: uuid.UUID, request: Request, who: Capturer) -> Response:
    async with unit_of_work(_sessions(request)) as session:
        if not await repository.delete_draft(session, who.sub, visit_id):
            raise not_found("draft")
    return Response(status_code=204)


@router.post(
    "/visit-drafts/{visit_id}/submit",
    response_model=VisitOut,
    status_code=201,
    responses={**problems(403, 404, 409), **RATE_LIMITED},
)
async def submit_draft(
    visit_id: uuid.UUID, request: Request, response: Response, who: LimitedCapturer
) -> VisitOut:
    """Submit the draft as a visit with the draft's id: a 422 naming each field still
    missing or breaking the capture rules; then authorised, chained and published on
    `visit-completed` like `POST /v1/visits`, and the draft is gone. Submitting again
    answers 201 with the same visit (`Idempotent-Replayed: true`): the id is the
    idempotency, so no key is needed."""
    sessions = _sessions(request)
    async with unit_of_work(sessions) as session:
        visit = await drafts.submitted_already(session, who.sub, visit_id)
        if visit is None:
            capture = await drafts.as_capture(session, who.sub, visit_id)
        view = await service.view_of(session, visit) if visit is not None else None
    if view is None:
        region = await service.authorize_capture(
            _scheduler(request), who, capture, _grants(request)
        )
        async with unit_of_work(sessions) as session:
            recorded = await service.record_visit(
                session, agent_id=who.sub, idempotency_key=None, body=capture, region=region
            )
            if recorded.created:
                return recorded.view()
            view = await service.view_of(session, recorded.visit)
    response.headers["Idempotent-Replayed"] = "true"
    return view


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
    sessions = _sessions(request)
    async with unit_of_work(sessions) as session:
        report = await reports.earlier_report(session, body)
    created = False
    if report is None:
        region = await reports.confirm_loan(_scheduler(request), body.loan_id)
        async with unit_of_work(sessions) as session:
            report, created = await reports.record_report(session, body, region)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return report


@router.post(
    "/evidence",
    response_model=EvidenceOut,
    status_code=201,
    responses={
        **problems(409),
        415: problem(415, "`Content-Type` is not an evidence type; `errors` names it."),
        **RATE_LIMITED,
    },
    openapi_extra={"requestBody": _EVIDENCE_BODY},
)
async def upload_evidence(
    request: Request,
    response: Response,
    who: LimitedUploader,
    kind: Annotated[
        EvidenceKind | None,
        Query(description="`photo` (of the car) or `document`; by default an image is a photo."),
    ] = None,
) -> EvidenceOut:
    """Upload a photo or document scan before the visit that references it (step one of
    two; a phone uploads when it has signal, then submits the visit with the
    `evidence_id`s). The raw bytes are the body, as `Content-Type` declares: `image/jpeg`,
    `image/png`, `image/heic` or `application/pdf`; another type is a 415, bytes that are
    not the declared type a 422 naming `body`. At most `MAX_EVIDENCE_BYTES` (10 MiB, 413
    past it). The SHA-256 of the bytes is recorded and returned. Uploading the same bytes
    again answers 201 with the same evidence (and `Idempotent-Replayed: true`).

    At most `EVIDENCE_UPLOADS_PER_MINUTE` (120) a minute per caller and API process: a 429
    with Retry-After past it."""
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
    uploaded, created = await evidence.upload(
        _sessions(request),
        _store(request),
        who,
        request.headers.get("content-type"),
        bytes(received),
        kind,
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return EvidenceOut.model_validate(uploaded, from_attributes=True)


@router.get(
    "/evidence/{evidence_id}",
    response_class=Response,
    responses={
        200: {"description": "The bytes as uploaded.", "content": _EVIDENCE_CONTENT},
        **problems(403, 404),
    },
)
async def get_evidence(evidence_id: uuid.UUID, request: Request, who: Reader) -> Response:
    """The bytes of an uploaded photo or scan, with the type they were checked to be. Only
    its uploader, the supervisor of the region of the visit it is attached to, ops and
    admin see it; to anyone else it does not exist (404)."""
    # No transaction is held while the bytes are read from the store.
    found, data = await evidence.read(_sessions(request), _store(request), who, evidence_id)
    return Response(
        content=data,
        media_type=found.content_type,
        headers={
            "X-Content-Type-Options": "nosniff",
            # Served to a browser, the file is inert: no scripts, no forms, no plugins.
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "ETag": f'"{found.sha256}"',
        },
    )
