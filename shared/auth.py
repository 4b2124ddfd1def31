"""HS256 bearer tokens: `sub` (the agent id for agents), `role`, `iat`, `exp`, and for
supervisors the `region` they oversee.

Decoding is strict: `sub` lands in audit columns (who acknowledged an alert, who recorded a
visit), so it must be a short, safe identifier; `exp` and `iat` must be JSON numbers
(RFC 7519 NumericDate, not strings that happen to parse); and no token lives longer than
the configured maximum, however far its `exp` lies.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

import jwt
from fastapi import Request
from starlette.types import Scope

from shared.errors import Problem
from shared.lru import BoundedLru
from shared.validation import ID_PATTERN

Role = Literal["agent", "supervisor", "ops", "integration", "admin"]
ROLES: tuple[str, ...] = get_args(Role)

# People and services: `AG-17`, `ops.desk@lender`, `service:visits`.
SUB_PATTERN = re.compile(r"[A-Za-z0-9_.@:-]{1,64}")
# An agent's sub is its agent id: it is stored on visits and asked of the scheduler as one,
# so it must be a valid id there (`ag.1@x` would be refused by every task query).
_AGENT_ID_PATTERN = re.compile(ID_PATTERN)
_REGION_PATTERN = re.compile(ID_PATTERN)
MAX_TOKEN_LIFETIME = timedelta(hours=12)


@dataclass(frozen=True)
class Principal:
    sub: str
    role: Role
    # The region a supervisor oversees; None for roles that are not bound to one.
    region: str | None = None

    @property
    def is_agent(self) -> bool:
        return self.role == "agent"


def issue_token(
    secret: str,
    sub: str,
    role: Role,
    *,
    ttl: timedelta = timedelta(hours=1),
    region: str | None = None,
) -> str:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {"sub": sub, "role": role, "iat": now, "exp": now + ttl}
    if region is not None:
        claims["region"] = region
    return jwt.encode(claims, secret, "HS256")


def decode_token(
    secret: str, token: str, *, max_lifetime: timedelta = MAX_TOKEN_LIFETIME
) -> Principal:
    return _decode(secret, token, max_lifetime=max_lifetime)[0]


def _decode(secret: str, token: str, *, max_lifetime: timedelta) -> tuple[Principal, float]:
    """The token's principal and its `exp` (seconds since the epoch), or a 401 Problem."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["sub", "role", "exp", "iat"]}
        )
    except (jwt.PyJWTError, OverflowError) as exc:  # OverflowError: `exp: 1e400`
        raise _unauthorized(f"invalid token: {exc}") from exc
    exp, iat = claims["exp"], claims["iat"]
    if not (_numeric_date(exp) and _numeric_date(iat)):
        raise _unauthorized("exp and iat must be numbers (seconds since the epoch)")
    longest = max_lifetime.total_seconds()
    if exp - iat > longest or exp - time.time() > longest:
        raise _unauthorized(f"token lives longer than {max_lifetime}")
    role, sub, region = claims.get("role"), claims.get("sub"), claims.get("region")
    if role not in ROLES:
        raise _unauthorized("token has no valid role")
    if not isinstance(sub, str) or SUB_PATTERN.fullmatch(sub) is None:
        raise _unauthorized(f"sub must match {SUB_PATTERN.pattern}")
    if role == "agent" and _AGENT_ID_PATTERN.fullmatch(sub) is None:
        raise _unauthorized(f"an agent's sub is its agent id and must match {ID_PATTERN}")
    if region is not None and (
        not isinstance(region, str) or _REGION_PATTERN.fullmatch(region) is None
    ):
        raise _unauthorized(f"region must match {ID_PATTERN}")
    return Principal(sub=sub, role=role, region=region), float(exp)


def _numeric_date(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


# Where the edge (shared.middleware) leaves the caller of a request, once its token is valid.
PRINCIPAL_SCOPE_KEY = "huifang.principal"


# Tokens verified lately, so that an app's every request is not verified again: decoding
# and checking one is a tenth of a capture's CPU. Kept no longer than the token's own `exp`
# nor than VERIFIED_TTL_SECONDS (a short while: nothing here can be revoked, but a process
# that outlives a secret rotation should stop honouring the old one soon), at most
# MAX_VERIFIED tokens, least recently used dropped first. Only tokens that passed every
# check are kept; a refused one is decoded, and refused, again each time.
VERIFIED_TTL_SECONDS = 60.0
MAX_VERIFIED = 10_000


class VerifiedTokens:
    def __init__(
        self, max_entries: int = MAX_VERIFIED, ttl_seconds: float = VERIFIED_TTL_SECONDS
    ) -> None:
        self._ttl = ttl_seconds
        # (token, secret, max_lifetime) -> (principal, valid until, epoch seconds)
        self._known: BoundedLru[tuple[str, str, timedelta], tuple[Principal, float]] = BoundedLru(
            max_entries
        )

    def get(self, key: tuple[str, str, timedelta], now: float) -> Principal | None:
        known = self._known.get(key)
        if known is None:
            return None
        principal, valid_until = known
        if now >= valid_until:
            self._known.discard(key)
            return None
        return principal

    def add(
        self, key: tuple[str, str, timedelta], principal: Principal, exp: float, now: float
    ) -> None:
        self._known.put(key, (principal, min(exp, now + self._ttl)))

    def clear(self) -> None:
        self._known.clear()


VERIFIED = VerifiedTokens()


def authenticate(authorization: str, secret: str, *, max_lifetime: timedelta) -> Principal:
    """The caller named by an `Authorization` header; a 401 Problem without a valid bearer
    token. Run once per request, at the edge, before the body is read; a token verified
    in the last minute is not verified again (`VERIFIED`) until its `exp`."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("missing bearer token")
    key = (token, secret, max_lifetime)
    now = time.time()
    principal = VERIFIED.get(key, now)
    if principal is not None:
        return principal
    principal, exp = _decode(secret, token, max_lifetime=max_lifetime)
    VERIFIED.add(key, principal, exp, now)
    return principal


def principal_of(scope: Scope) -> Principal | None:
    principal = scope.get(PRINCIPAL_SCOPE_KEY)
    return principal if isinstance(principal, Principal) else None


class RoleGuard:
    """FastAPI dependency: 403 for a role not allowed here. The token was checked at the
    edge (401 there); `allowed_roles` is also what the OpenAPI document lists for the route."""

    def __init__(self, allowed: tuple[Role, ...]) -> None:
        self.allowed_roles = allowed

    async def __call__(self, request: Request) -> Principal:
        principal = principal_of(request.scope)
        if principal is None:
            # A guarded route the edge did not authenticate: refuse rather than guess.
            raise _unauthorized("missing bearer token")
        if principal.role not in self.allowed_roles:
            raise Problem(403, "Forbidden", f"role '{principal.role}' may not do this")
        return principal


def require_roles(*allowed: Role) -> Callable[[Request], Awaitable[Principal]]:
    """FastAPI dependency: 403 for a role not allowed here (401 came at the edge)."""
    return RoleGuard(allowed)
