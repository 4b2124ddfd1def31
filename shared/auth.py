"""HS256 bearer tokens: `sub` (the agent id for agents), `role`, `exp`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

import jwt
from fastapi import Request

from shared.errors import Problem

Role = Literal["agent", "supervisor", "ops", "integration", "admin"]
ROLES: tuple[str, ...] = get_args(Role)


@dataclass(frozen=True)
class Principal:
    sub: str
    role: Role
    # The region a supervisor oversees (a claim of supervisors' tokens); None for others.
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
    claims: dict[str, object] = {"sub": sub, "role": role, "iat": now, "exp": now + ttl}
    if region is not None:
        claims["region"] = region
    return jwt.encode(claims, secret, "HS256")


def decode_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["sub", "role", "exp"]}
        )
    except jwt.PyJWTError as exc:
        raise _unauthorized(f"invalid token: {exc}") from exc
    role = claims.get("role")
    if role not in ROLES or not isinstance(claims.get("sub"), str):
        raise _unauthorized("token has no valid role or subject")
    region = claims.get("region")
    if region is not None and not isinstance(region, str):
        raise _unauthorized("token region is not a string")
    return Principal(sub=claims["sub"], role=role, region=region)


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def require_roles(*allowed: Role) -> Callable[[Request], Awaitable[Principal]]:
    """FastAPI dependency: 401 without a valid token, 403 for a role not allowed here."""

    async def dependency(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("missing bearer token")
        principal = decode_token(request.app.state.settings.jwt_secret, token)
        if principal.role not in allowed:
            raise Problem(403, "Forbidden", f"role '{principal.role}' may not do this")
        return principal

    return dependency
