"""Scheduler REST API: loans, agents and visit tasks."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import ValidationError

from services.scheduler import repository, service
from services.scheduler.models import VisitTask
from services.scheduler.schemas import (
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
from shared.app import SessionDep
from shared.auth import Principal, require_roles
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
MAX_IMPORT_LINES = 10_000
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
    "description": f"NDJSON: one loan (LoanImportLine) per line, at most {MAX_IMPORT_LINES} lines.",
    "content": {NDJSON: {"schema": {"type": "array", "items": _IMPORT_LINE_SCHEMA}}},
}


def _cipher(request: Request) -> PiiCipher:
    cipher: PiiCipher = request.app.state.cipher
    return cipher


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
    loan, created = await service.register_loan(session, _cipher(request), loan_id, body)
    response.status_code = 201 if created else 200
    return service.loan_view(loan, _cipher(request))


@router.post(
    "/loans/import",
    response_model=ImportResult,
    responses=problems(409, 413),
    openapi_extra={"requestBody": _IMPORT_BODY},
)
async def import_loans(request: Request, session: SessionDep, _caller: Integration) -> ImportResult:
    """NDJSON bulk registration: every line is validated first; one bad line writes nothing."""
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
    parsed = _parse_import(bytes(received))
    created = 0
    for item in parsed:
        body = LoanIn.model_validate(item.model_dump(exclude={"loan_id"}))
        _, was_created = await service.register_loan(session, _cipher(request), item.loan_id, body)
        created += was_created
    return ImportResult(imported=len(parsed), created=created)


def _parse_import(received: bytes) -> list[LoanImportLine]:
    """The loans of an NDJSON body, or a 422 naming every line at fault (by its line number
    in the body, blank lines counted). Bytes that are not UTF-8 are refused, never replaced:
    a plate stored as `A\ufffd1` is a different plate."""
    numbered = [
        (number, raw.rstrip(b"\r"))
        for number, raw in enumerate(received.split(b"\n"), start=1)
        if raw.strip()
    ]
    if not numbered:
        raise Problem(
            422,
            "Unprocessable Content",
            "no loans in the import",
            errors=[{"field": "body", "message": "no loans in the import"}],
        )
    if len(numbered) > MAX_IMPORT_LINES:
        raise Problem(413, "Content Too Large", f"at most {MAX_IMPORT_LINES} loans per import")
    parsed: list[LoanImportLine] = []
    errors: list[dict[str, str]] = []
    for number, raw in numbered:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            message = f"not UTF-8 (byte {exc.start + 1} of the line)"
            errors.append({"field": f"line[{number}]", "message": message})
            continue
        try:
            parsed.append(LoanImportLine.model_validate_json(line))
        except ValidationError as exc:
            errors += [
                {
                    "field": f"line[{number}]." + ".".join(str(p) for p in err["loc"]),
                    "message": err["msg"],
                }
                for err in exc.errors()
            ]
    if errors:
        raise Problem(
            422, "Unprocessable Content", "import rejected; nothing was written", errors=errors
        )
    return parsed


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


@router.get("/tasks", response_model=Page[TaskOut])
async def list_tasks(
    session: SessionDep, who: Reader, filters: Annotated[TaskQuery, Query()]
) -> Page[TaskOut]:
    """Tasks by filters; an agent always gets its own ("my tasks today": due_to=today)."""
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
    return TaskOut.model_validate(task, from_attributes=True)
