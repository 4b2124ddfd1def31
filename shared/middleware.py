"""The outermost layer of every service's own middleware: request id, response headers,
and the answer to an error nothing else handled.

Starlette answers an unhandled error from its ServerErrorMiddleware, which sits outside
every middleware an app adds: that 500 had no X-Request-ID, its traceback went to uvicorn's
plain-text logger, and the re-raised error made uvicorn drop the keep-alive connection.
Here the error is answered inside the stack instead: a problem+json 500 with the request
id, logged once through the JSON formatter, the connection kept.
"""

from __future__ import annotations

import logging
import re
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import PROBLEM_JSON, problem_body
from shared.logging import request_id_var

log = logging.getLogger(__name__)

# A caller's request id is echoed into logs and responses: only a short, plain one is kept.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# On every response: bodies carry borrower data (masked, but still PII) and notes.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get("x-request-id", "")
        rid = offered if _REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        token = request_id_var.set(rid)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = rid
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if started:
                raise  # part of the response is on the wire; only the server can end it
            body = problem_body(scope["path"], 500, "Internal Server Error", "unexpected error")
            response = JSONResponse(body, status_code=500, media_type=PROBLEM_JSON)
            await response(scope, receive, send_with_headers)
        finally:
            request_id_var.reset(token)
