"""The outermost layer of every service's own middleware: request id, the caller's token,
the size of the body, response headers, and the answer to an error nothing else handled.

Starlette answers an unhandled error from its ServerErrorMiddleware, which sits outside
every middleware an app adds: that 500 had no X-Request-ID, its traceback went to uvicorn's
plain-text logger, and the re-raised error made uvicorn drop the keep-alive connection.
Here the error is answered inside the stack instead: a problem+json 500 with the request
id, logged once through the JSON formatter, the connection kept.

The token is checked here, before anything reads the body: three unauthenticated 200 MB
posts once each took seconds and hundreds of megabytes to be told 401. The body is then
counted as it streams in (chunked bodies too, whatever Content-Length claims) and refused
with a 413 past the route's limit.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from datetime import timedelta

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import PRINCIPAL_SCOPE_KEY, authenticate
from shared.errors import PROBLEM_JSON, Problem, problem_body
from shared.logging import CheckedId, request_id_var
from shared.pii import mask_pii
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

# A caller's request id is echoed into logs and responses: only a short, plain one is kept,
# and only if it carries nothing the PII masker would hide (a national id as a trace id).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# On every response: bodies carry borrower data (masked, but still PII) and notes.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

# Every route under it needs a bearer token; health, readiness and the docs do not.
API_PREFIX = "/v1/"


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body passes its limit. An HTTPException, so that FastAPI
    lets it through its body parsing and the problem handler answers it with a 413."""

    def __init__(self, limit: int) -> None:
        # The rest of the body is not read: the connection cannot carry another request.
        super().__init__(
            413, f"the request body exceeds {limit} bytes", headers={"Connection": "close"}
        )


def request_id(offered: str) -> str:
    """The caller's request id if it is safe to echo and log as it is, else a new one
    (hex: nothing to mask). Either is checked once here, not on every log line."""
    if _REQUEST_ID.fullmatch(offered) and mask_pii(offered) == offered:
        return CheckedId(offered)
    return CheckedId(uuid.uuid4().hex)


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: ServiceSettings,
        body_limits: Mapping[str, int] | None = None,
    ) -> None:
        """`body_limits`: larger (or smaller) limits than `settings.max_body_bytes` for
        particular routes, by `"METHOD /path"` (e.g. a bulk import)."""
        self.app = app
        self._secret = settings.jwt_secret
        self._max_lifetime = timedelta(hours=settings.jwt_max_lifetime_hours)
        self._max_body = settings.max_body_bytes
        self._body_limits = dict(body_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        rid = request_id(headers.get("x-request-id", ""))
        token = request_id_var.set(rid)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                response_headers = MutableHeaders(scope=message)
                response_headers["X-Request-ID"] = rid
                for name, value in SECURITY_HEADERS.items():
                    response_headers.setdefault(name, value)
            await send(message)

        async def answer(status: int, title: str, detail: str | None, **extra: str) -> None:
            body = problem_body(scope["path"], status, title, detail)
            response = JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)
            response.headers.update(extra)
            await response(scope, receive, send_with_headers)

        try:
            if scope["path"].startswith(API_PREFIX):
                scope[PRINCIPAL_SCOPE_KEY] = authenticate(
                    headers.get("authorization", ""), self._secret, max_lifetime=self._max_lifetime
                )
            limit = self._body_limits.get(f"{scope['method']} {scope['path']}", self._max_body)
            if _declared_length(headers) > limit:
                raise BodyTooLarge(limit)
            await self.app(scope, _limited(receive, limit), send_with_headers)
        except (Problem, BodyTooLarge) as exc:  # the edge's own refusals: token, size
            if started:
                raise
            if isinstance(exc, Problem):
                await answer(exc.status, exc.title, exc.detail, **(exc.headers or {}))
            else:
                await answer(413, "Content Too Large", str(exc.detail), **(exc.headers or {}))
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if started:
                raise  # part of the response is on the wire; only the server can end it
            await answer(500, "Internal Server Error", "unexpected error")
        finally:
            request_id_var.reset(token)


def _declared_length(headers: Headers) -> int:
    # A malformed Content-Length never reaches here: the server's HTTP parser refuses it.
    declared = headers.get("content-length", "")
    return int(declared) if declared.isdigit() else 0


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive`, raising BodyTooLarge as soon as the body read so far passes `limit`."""
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_within_limit
