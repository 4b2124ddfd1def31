"""Calls to another service's REST API for facts it owns (design.md, "Facts owned by
another service"): a service token, a timeout, bounded retries and a short cache."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from shared.auth import issue_token
from shared.lru import BoundedLru
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

# What the owner answers about a resource it does not have: absent (404), or a path it will
# not even look up (400, 422: an id it refuses, such as the reserved loan id `import`).
NO_SUCH_RESOURCE = frozenset({400, 404, 422})
# What it answers about our token: a misconfiguration here (secret, role), not the
# caller's fault and not the resource's absence.
REFUSED_US = frozenset({401, 403})


class OwnerUnavailable(Exception):
    """The owning service did not answer; a request gets 503, an event is retried."""


class ServiceClient:
    def __init__(
        self,
        *,
        base_url: str,
        jwt_secret: str,
        caller: str,
        timeout_seconds: float = 2.0,
        retries: int = 2,
        cache_seconds: float = 30.0,
        cache_entries: int = 10_000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_seconds, transport=transport
        )
        self._secret = jwt_secret
        self._caller = caller
        self._retries = retries
        self._cache_seconds = cache_seconds
        # Least recently used first; bounded, so a month-end run over a million loans
        # cannot grow a worker's memory with every loan it looked up.
        self._cache: BoundedLru[str, tuple[float, dict[str, Any]]] = BoundedLru(cache_entries)

    @classmethod
    def scheduler(
        cls,
        settings: ServiceSettings,
        *,
        caller: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> ServiceClient:
        """A client of the scheduler, which owns loans and tasks."""
        return cls(
            base_url=settings.scheduler_url,
            jwt_secret=settings.jwt_secret,
            caller=caller,
            timeout_seconds=settings.http_timeout_seconds,
            retries=settings.http_retries,
            cache_seconds=settings.http_cache_seconds,
            transport=transport,
        )

    def _token(self) -> str:
        return issue_token(self._secret, f"service:{self._caller}", "integration")

    async def get_json(self, path: str, *, cached: bool = True) -> dict[str, Any] | None:
        """GET a resource. None when the owner says there is no such resource (400, 404,
        422); OwnerUnavailable when it is down, answers 5xx or anything unexpected, or
        refuses our own token (401, 403, logged as an error: only configuration fixes it)."""
        now = time.monotonic()
        hit = self._cache.get(path)
        if cached and hit is not None and hit[0] > now:
            return hit[1]
        last_error: Exception | None = None
        for attempt in range(self._retries + 1):
            try:
                response = await self._client.get(
                    path, headers={"Authorization": f"Bearer {self._token()}"}
                )
            except httpx.TransportError as exc:
                last_error = exc
            else:
                status = response.status_code
                if status in NO_SUCH_RESOURCE:
                    return None
                if status in REFUSED_US:
                    log.error(
                        "%s refused this service's token (%s): check JWT_SECRET and the "
                        "service role",
                        self._client.base_url,
                        status,
                    )
                    raise OwnerUnavailable(f"{self._client.base_url}: our token refused ({status})")
                if 200 <= status < 300:
                    body = _json_object(response)
                    if body is None:
                        raise OwnerUnavailable(f"{self._client.base_url}: not a JSON object")
                    self._remember(path, now + self._cache_seconds, body)
                    return body
                if status < 500:
                    # 409, 413, 429...: nothing a GET should meet; a bug or a limit there.
                    log.error("unexpected %s from %s on a lookup", status, self._client.base_url)
                    raise OwnerUnavailable(f"{self._client.base_url}: unexpected {status}")
                last_error = httpx.HTTPStatusError(
                    f"{status} from owner", request=response.request, response=response
                )
            if attempt < self._retries:
                await asyncio.sleep(0.1 * 2**attempt)
        raise OwnerUnavailable(f"{self._client.base_url}{path}: {last_error}")

    def _remember(self, path: str, expires: float, body: dict[str, Any]) -> None:
        self._cache.put(path, (expires, body))

    async def aclose(self) -> None:
        await self._client.aclose()


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
