"""Scheduler REST API: loans, agents and visit tasks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import repository, service
from services.scheduler.loan_import import MAX_LINE_BYTES, import_lines, numbered_lines
from services.scheduler.models import VisitTask
from services.scheduler.registration import Registered, register_loans
from services.scheduler.schemas import (
    AbsencesIn,
    AbsencesOut,
    AgentIn,
    AgentOut,
    ImportResult,
    LoanImportLine,
    LoanIn,
    LoanOut,
    RescheduleIn,
    TaskOut,
    TaskQuery,
)
from services.scheduler.valuations import ValuationLine, ValuationResult, import_valuations
from shared.app import SessionDep
from shared.auth import Principal, require_roles
from shared.db import unit_of_work
from shared.errors import Problem, not_found
from shared.openapi import problems
from shared.pagination import CursorText, Page
from shared.pii import PiiCipher
from shared.validation import Identifier, LoanId

router = APIRouter(prefix="/v1")

Integration = Annotated[Principal, Depends(require_roles("integration", "admin"))]
Admin = Annotated[Principal, Depends(require_roles("admin"))]
Supervisor = Annotated[Principal, Depends(require_roles("supervisor", "admin"))]
# Who reads which rows is the repository's (`visible_loans`, `visible_tasks`).
Reader = Annotated[Principal, Depends(require_roles(*repository.READERS))]
LoanIdPath = Annotated[LoanId, Path()]
AgentIdPath = Annotated[Identifier, Path()]
# Its body may be larger than a JSON body's (SchedulerSettings.max_import_bytes); the
# request middleware counts the bytes as they stream in.
IMPORT_ROUTE = "POST /v1/loans/import"
NDJSON = "application/x-ndjson"
# The import body as the OpenAPI document shows it: NDJSON, one LoanImportLine per line
# (nested models by reference to the components LoanIn already put there).
_IMPORT_LINE_SCHEMA = {
    key: value
    for key, value in LoanImportLine.model_json_schema(
        ref_template="#/components/schemas/{model}"
    ).items()
    if key != "$defs"
}
_IMPORT_BODY = {
    "required": True,
    "description": (
        "NDJSON: one loan (LoanImportLine) per line, any number of lines up to the import's"
        f" body limit; a line longer than {MAX_LINE_BYTES} bytes is rejected. Blank lines"
        " are skipped (and counted in line numbers)."
    ),
    "content": {NDJSON: {"schema": {"type": "array", "items": _IMPORT_LINE_SCHEMA}}},
}


def _cipher(request: Request) -> PiiCipher:
    cipher: PiiCipher = request.app.state.cipher
    return cipher


def _digest_key(request: Request) -> bytes:
    key: bytes = request.app.state.registration_digest_key
    return key


@router.put(
    "/loans/{loan_id}",
    response_model=LoanOut,
    responses={
        201: {"model": LoanOut, "description": "Registered (200: updated)."},
        **problems(409),
    },
)
async def put_loan(
    loan_id: LoanIdPath,
    body: LoanIn,
    session: SessionDep,
    request: Request,
    response: Response,
    _: Integration,
) -> LoanOut:
    registered = await register_loans(
        session, _cipher(request), _digest_key(request), [(loan_id, body)]
    )
    loan = await repository.get_loan(session, loan_id)
    if loan is None:  # pragma: no cover - written in this transaction
        raise not_found("loan")
    response.status_code = 201 if registered.created else 200
    return service.loan_view(loan, _cipher(request))


@router.post(
    "/loans/import",
    response_model=ImportResult,
    responses=problems(413, 422),
    openapi_extra={"requestBody": _IMPORT_BODY},
)
async def import_loans(request: Request, _caller: Integration) -> ImportResult:
    """NDJSON bulk registration, read as it streams in. Good lines are registered (a chunk
    of them per transaction) and bad lines are not; each rejected line is reported by its
    number with the reason. Importing the same file again changes nothing.

    A file with no good line is refused (422). A failure mid-file (the database gone, the
    body past its limit) leaves the chunks already committed: importing the file again
    completes it."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    cipher, key = _cipher(request), _digest_key(request)

    async def register(loans: Sequence[tuple[str, LoanIn]]) -> Registered:
        async with unit_of_work(sessions) as session:
            return await register_loans(session, cipher, key, loans)

    tally = await import_lines(numbered_lines(request.stream()), register)
    result = tally.result()
    if result.accepted == 0 and result.rejected == 0:
        raise Problem(
            422,
            "Unprocessable Content",
            "no loans in the import",
            errors=[{"field": "body", "message": "no loans in the import"}],
        )
    if result.accepted == 0:
        raise _nothing_accepted("no loan in the import could be registered", result)
    return result


def _nothing_accepted(detail: str, result: ImportResult | ValuationResult) -> Problem:
    """The 422 of an NDJSON body none of whose lines was accepted: each rejected line by
    number, field and reason (`body` when there was no line at all)."""
    errors = [
        {"field": f"line[{r.line}]" + (f".{r.field}" if r.field else ""), "message": r.reason}
        for r in result.rejected_lines
    ]
    return Problem(
        422,
        "Unprocessable Content",
        detail,
        errors=errors or [{"field": "body", "message": detail}],
    )


VALUATIONS_ROUTE = "POST /v1/valuations"
_VALUATIONS_BODY = {
    "required": True,
    "description": "NDJSON: one ValuationLine per line (loan_id, valuation, valued_on).",
    "content": {NDJSON: {"schema": {"type": "array", "items": ValuationLine.model_json_schema()}}},
}


@router.post(
    "/valuations",
    response_model=ValuationResult,
    responses=problems(413, 422),
    openapi_extra={"requestBody": _VALUATIONS_BODY},
)
async def post_valuations(request: Request, _caller: Integration) -> ValuationResult:
    """Vehicle prices in bulk, read as they stream in: each loan's LTV is recomputed (an
    older valuation than the one stored is ignored), a loan whose LTV reaches the visit
    policy's limit gets a collateral review and a higher tier, and every loan whose value
    changed is announced on `loan-registered`. Bad lines are reported by number."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    result = await import_valuations(sessions, numbered_lines(request.stream()))
    if result.accepted == 0:
        raise _nothing_accepted("no valuation in the body could be applied", result)
    return result


@router.get("/loans/{loan_id}", response_model=LoanOut, responses=problems(404))
async def get_loan(
    loan_id: LoanIdPath, session: SessionDep, request: Request, who: Reader
) -> LoanOut:
    loan = await repository.get_loan_visible_to(session, loan_id, who)
    if loan is None:
        raise not_found("loan")
    return service.loan_view(loan, _cipher(request))


@router.get("/loans/{loan_id}/tasks", response_model=Page[TaskOut])
async def loan_tasks(
    loan_id: LoanIdPath,
    session: SessionDep,
    who: Reader,
    cursor: Annotated[CursorText | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[TaskOut]:
    return await _task_page(session, who, TaskQuery(loan_id=loan_id, cursor=cursor, limit=limit))


@router.put("/agents/{agent_id}", response_model=AgentOut, responses=problems(409))
async def put_agent(
    agent_id: AgentIdPath, body: AgentIn, session: SessionDep, _: Admin
) -> AgentOut:
    agent = await service.upsert_agent(session, agent_id, body)
    return AgentOut.model_validate(agent, from_attributes=True)


@router.put("/agents/{agent_id}/absences", response_model=AbsencesOut, responses=problems(404))
async def put_absences(
    agent_id: AgentIdPath, body: AbsencesIn, session: SessionDep, _: Supervisor
) -> AbsencesOut:
    """Replace the agent's absences (leave, training; both days included). Dispatch gives
    it nothing due on those days, and its open tasks due then go to others."""
    released = await service.replace_absences(session, agent_id, body)
    return AbsencesOut(agent_id=agent_id, absences=body.absences, released_tasks=released)


@router.get("/tasks", response_model=Page[TaskOut])
async def list_tasks(
    session: SessionDep, who: Reader, filters: Annotated[TaskQuery, Query()]
) -> Page[TaskOut]:
    """Tasks by filters; an agent always gets its own, soonest due first (overdue and
    today's lead, marked `overdue`); `region` and `order=due` give a region's work by
    urgency (a supervisor's view)."""
    return await _task_page(session, who, filters)


@router.get("/tasks/{task_id}", response_model=TaskOut, responses=problems(404))
async def get_task(task_id: uuid.UUID, session: SessionDep, who: Reader) -> TaskOut:
    task = await repository.get_task_visible_to(session, task_id, who)
    if task is None:
        raise not_found("task")
    return _task_out(task)


@router.post(
    "/tasks/{task_id}/reschedule", response_model=TaskOut, responses=problems(403, 404, 409)
)
async def reschedule(
    task_id: uuid.UUID, body: RescheduleIn, session: SessionDep, who: Supervisor
) -> TaskOut:
    """Move an open task to another day and/or another agent of the loan's region. A
    supervisor acts only on the loans of the region its token names; others' look absent."""
    task = await service.reschedule_task(session, task_id, body, who)
    return TaskOut.model_validate(task, from_attributes=True)


async def _task_page(session: SessionDep, who: Principal, filters: TaskQuery) -> Page[TaskOut]:
    return await repository.list_tasks(session, who, filters, to_item=_task_out)


def _task_out(task: VisitTask) -> TaskOut:
    out = TaskOut.model_validate(task, from_attributes=True)
    out.overdue = task.status == "open" and task.due_on < datetime.now(UTC).date()
    return out
