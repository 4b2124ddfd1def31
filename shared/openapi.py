"""The OpenAPI document says everything a route can answer.

FastAPI documents a route's success and a 422 `application/json` it never sends. Here every
/v1 operation also lists the problem+json answers every route can give (401 without a valid
token, 403 when its roles exclude the caller's, 422 for invalid input, 500, 503 while the
database is unavailable; 400 and 413 for a body that cannot be parsed or is too large),
plus those the route declares with `problems(...)`, all with one
`Problem` schema; and it names the bearer scheme and the roles allowed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from shared.auth import ROLES, RoleGuard
from shared.errors import PROBLEM_JSON

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details.",
    "type": "object",
    "required": ["type", "title", "status", "instance"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "instance": {"type": "string"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "The fields at fault, e.g. `body.borrower.phone`, `query.cursor`.",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

REASONS = {
    400: "The request body cannot be parsed; `errors` names `body`.",
    401: "No valid bearer token.",
    403: "The token's role may not do this.",
    404: "Not found, or not visible to the caller.",
    409: "Conflicts with the resource's current state.",
    413: "The request body is larger than the route accepts.",
    422: "Invalid input; `errors` names each field at fault.",
    500: "Unexpected error; `X-Request-ID` finds it in the logs.",
    503: "The database (or a service this one asks) is unavailable; see Retry-After.",
}

# What every authenticated operation can answer, whatever it does.
COMMON = (401, 422, 500, 503)


def problem(status: int, description: str | None = None) -> dict[str, Any]:
    return {
        "description": description or REASONS.get(status, "Error."),
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
    }


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: the problem answers particular to it (404, 409, 413, ...)."""
    return {status: problem(status) for status in statuses}


def _allowed_roles(dependant: Dependant) -> tuple[str, ...] | None:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, RoleGuard):
            return dependency.call.allowed_roles
        nested = _allowed_roles(dependency)
        if nested is not None:
            return nested
    return None


def _document(operation: dict[str, Any], roles: tuple[str, ...] | None, all_roles: int) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    # FastAPI's own 422 is `application/json` with its HTTPValidationError: not what is sent.
    responses.pop("422", None)
    statuses = list(COMMON) if roles is not None else [422, 500, 503]
    if roles is not None and len(roles) < all_roles:
        statuses.append(403)
    if "requestBody" in operation:
        statuses += [400, 413]
    for status in statuses:
        responses.setdefault(str(status), problem(status))
    if roles is not None:
        operation["security"] = [{"bearer": []}]
        allowed = f"Roles: {', '.join(roles)}."
        operation["description"] = f"{operation.get('description', '')}\n\n{allowed}".strip()


def install_openapi(app: FastAPI, routers: list[APIRouter]) -> None:
    """Replace `app.openapi` with one that documents every answer of the routes of
    `routers` (built once, cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = document.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        }
        for route in (route for router in routers for route in router.routes):
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            path_item = document["paths"].get(route.path_format, {})
            for method in route.methods or ():
                operation = path_item.get(method.lower())
                if operation is not None:
                    _document(operation, _allowed_roles(route.dependant), len(ROLES))
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
