"""The visit policy's routes: the version in force, installing a new one.

`PUT /v1/policy` takes the reviewed YAML file itself (JSON, a subset of YAML, too), so what
was reviewed is what is installed, word for word; it is validated by `VisitPolicy` and a
mistake is answered 422 naming the field (`body.tiers.high.field_every_months`). The worker
re-plans open, unstarted routine tasks by the new version (replan.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ValidationError
from sqlalchemy import text

from services.scheduler import policies
from services.scheduler.simulate import Simulation, simulate
from services.scheduler.visit_policy import PolicyInForce, VisitPolicy, parse_policy
from shared.app import SessionDep
from shared.auth import Principal, require_roles
from shared.errors import Problem
from shared.openapi import problems

router = APIRouter(prefix="/v1")

Admin = Annotated[Principal, Depends(require_roles("admin"))]
Planner = Annotated[Principal, Depends(require_roles("supervisor", "admin"))]
Reader = Annotated[Principal, Depends(require_roles("supervisor", "ops", "admin", "integration"))]

_POLICY_BODY = {
    "required": True,
    "description": "The policy file (YAML, or JSON), as services/scheduler/policy.yaml.",
    "content": {
        "application/yaml": {"schema": {"type": "string"}},
        "application/json": {"schema": {"$ref": "#/components/schemas/VisitPolicy"}},
    },
}


class PolicyOut(BaseModel):
    version: int
    installed_by: str
    installed_at: datetime
    policy: VisitPolicy
    source: str


def invalid_policy(exc: ValidationError | ValueError) -> Problem:
    """A 422 naming each field at fault, as `body.<path>`."""
    if isinstance(exc, ValidationError):
        errors = [
            {
                "field": ".".join(["body", *(str(part) for part in error["loc"])]),
                "message": error["msg"],
            }
            for error in exc.errors()
        ]
    else:
        errors = [{"field": "body", "message": str(exc)[:500]}]
    return Problem(422, "Unprocessable Content", "not a valid visit policy", errors=errors)


async def read_policy(request: Request) -> tuple[VisitPolicy, str]:
    """The body as a validated policy, and its text."""
    raw = await request.body()
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_policy(ValueError("not UTF-8")) from None
    try:
        return parse_policy(source), source
    except (ValidationError, ValueError) as exc:
        raise invalid_policy(exc) from None


@router.get("/policy", response_model=PolicyOut)
async def get_policy(session: SessionDep, _: Reader) -> PolicyOut:
    """The visit policy in force (the shipped defaults until one is installed)."""
    return await _view(session, (await policies.current_policy(session)).version)


@router.put(
    "/policy",
    response_model=PolicyOut,
    status_code=201,
    responses=problems(422),
    openapi_extra={"requestBody": _POLICY_BODY},
)
async def put_policy(request: Request, session: SessionDep, who: Admin) -> PolicyOut:
    """Validate and install a new version of the visit policy. Tasks planned from now on
    record it; the worker re-plans open routine tasks by it."""
    rules, source = await read_policy(request)
    installed = await policies.install_policy(session, rules, source, installed_by=who.sub)
    return await _view(session, installed.version)


@router.post(
    "/policy/simulate",
    response_model=Simulation,
    responses=problems(422),
    openapi_extra={"requestBody": _POLICY_BODY},
)
async def simulate_policy(request: Request, session: SessionDep, _: Planner) -> Simulation:
    """Project a candidate policy over the next 90 days: visits per week, region and
    method for the whole portfolio, against the agents' capacity, and where demand exceeds
    it. Nothing is installed or planned."""
    rules, _source = await read_policy(request)
    candidate = PolicyInForce(0, rules)
    return await simulate(session, candidate, datetime.now(UTC).date())


async def _view(session: SessionDep, version: int) -> PolicyOut:
    row = (
        await session.execute(
            text(
                "SELECT version, installed_by, installed_at, document, source"
                " FROM scheduler.policies WHERE version = :v"
            ),
            {"v": version},
        )
    ).one()
    document: dict[str, Any] = row.document
    return PolicyOut(
        version=row.version,
        installed_by=row.installed_by,
        installed_at=row.installed_at,
        policy=VisitPolicy.model_validate(document),
        source=row.source,
    )
