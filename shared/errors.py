"""RFC 9457 problem+json for every error a service returns, 500s included.

Database errors that are not bugs get the status they deserve, whatever the route:
the database unreachable, full or restarting is a 503 with Retry-After (the client should
come back), a value PostgreSQL refuses (SQLSTATE class 22, "data exception") is a 422, a
unique key taken by a concurrent request is a 409. Anything else unhandled is answered by
shared.middleware, inside the request-id middleware.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# How long a client should wait before retrying while the database is unavailable.
RETRY_AFTER_SECONDS = 5

# SQLSTATE prefixes meaning "try again shortly": connection exceptions (08), insufficient
# resources such as too many connections (53), the server shutting down, crashed or starting
# up (57P0x), a query cancelled by a timeout (57014), a lock not granted in time (55P03),
# a serialization failure (40001) or a deadlock (40P01).
UNAVAILABLE_SQLSTATES = ("08", "53", "57P0", "57014", "55P03", "40001", "40P01")
# A problem lists at most this many fields at fault: a body of 500,000 unknown keys once
# answered 40 MB of errors. The rest are counted in `detail`.
MAX_ERRORS = 50
# A field name echoes what the client sent (an unknown key): bounded, and always UTF-8.
MAX_FIELD_LENGTH = 200


class Problem(Exception):
    """Raise from any layer to answer with a problem+json response."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers


def not_found(what: str) -> Problem:
    return Problem(404, "Not Found", f"{what} not found")


# RFC 9110's names, where Python's http module still has the older ones.
_TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}


def title_of(status: int) -> str:
    """The standard reason phrase: `400` -> `Bad Request`, `413` -> `Content Too Large`."""
    if status in _TITLES:
        return _TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(
    instance: str,
    status: int,
    title: str,
    detail: str | None = None,
    *,
    errors: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    body["instance"] = instance
    if errors and len(errors) > MAX_ERRORS:
        unlisted = len(errors) - MAX_ERRORS
        errors = errors[:MAX_ERRORS]
        more = f"{unlisted} more errors not listed"
        detail = f"{detail} ({more})" if detail else more
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    return body


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str | None = None,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = problem_body(request.url.path, status, title, detail, errors=errors)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: tuple[int | str, ...] | list[int | str]) -> str:
    # An unknown key is echoed as the client sent it: a lone surrogate in it could not be
    # encoded in the answer, and a megabyte-long key would be echoed whole.
    name = ".".join(str(part) for part in loc)
    name = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return name if len(name) <= MAX_FIELD_LENGTH else name[:MAX_FIELD_LENGTH] + "…"


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE PostgreSQL answered with, if `exc` carries one (asyncpg via SQLAlchemy)."""
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code if isinstance(code, str) else None


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot serve right now: not this request's fault, nor a bug."""
    if isinstance(exc, PoolTimeoutError | OSError | TimeoutError):
        # No connection from the pool in time; connection refused or reset; connect timeout.
        return True
    if isinstance(exc, DBAPIError):
        code = sqlstate(exc)
        if exc.connection_invalidated:
            return True
        if code is not None:
            return code.startswith(UNAVAILABLE_SQLSTATES)
        # A connection refused while the pool connects arrives wrapped, without a SQLSTATE.
        orig = exc.orig
        return isinstance(orig, OSError) or isinstance(getattr(orig, "__cause__", None), OSError)
    return False


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.title, exc.detail, errors=exc.errors, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(err["loc"]), "message": err["msg"]} for err in exc.errors()]
        fields = ", ".join(e["field"] for e in errors[:MAX_ERRORS])
        return problem_response(
            request, 422, "Unprocessable Content", f"invalid fields: {fields}", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers 400 for a body it cannot parse (not JSON it can decode, or nested
        # past the parser's recursion limit); the body is the field at fault.
        errors = (
            [{"field": "body", "message": str(exc.detail or "cannot be parsed")}]
            if exc.status_code == 400
            else None
        )
        return problem_response(
            request,
            exc.status_code,
            title_of(exc.status_code),
            str(exc.detail) if exc.detail else None,
            errors=errors,
            headers=dict(exc.headers) if exc.headers else None,
        )

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        return database_problem(request, exc)

    for error in (DBAPIError, PoolTimeoutError, OSError, TimeoutError):
        app.add_exception_handler(error, _database)


def database_problem(request: Request, exc: Exception) -> JSONResponse:
    """The answer to a database error that reached the edge of a request."""
    code = sqlstate(exc)
    if is_unavailable(exc):
        log.warning("unavailable: %s (SQLSTATE %s)", type(exc).__name__, code)
        return problem_response(
            request,
            503,
            "Service Unavailable",
            "the service cannot reach its database right now; retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if code is not None and code.startswith("22"):
        # A value the schemas let through but PostgreSQL refuses: a gap in validation, logged
        # so it gets closed, answered as the client's error it is. No values: they may be PII.
        log.error("database refused a value (SQLSTATE %s) on %s", code, request.url.path)
        return problem_response(
            request,
            422,
            "Unprocessable Content",
            "a value cannot be stored",
            errors=[{"field": "body", "message": f"refused by the database (SQLSTATE {code})"}],
        )
    if code == "23505":
        return problem_response(
            request, 409, "Conflict", "a concurrent request changed this resource; retry"
        )
    # A bug: the middleware logs it with its traceback and answers 500.
    raise exc
