"""The visit policy's versions in the database: the one in force, and installing a new one.

The shipped `policy.yaml` becomes version 1 the first time a policy is needed, so a fresh
database plans by the lender's reviewed defaults without a manual step. Each installation
is a new row; nothing is updated, so any task's `reason.policy_version` can be looked up.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler.visit_policy import (
    DEFAULT_POLICY_FILE,
    PolicyInForce,
    VisitPolicy,
    parse_policy,
)

# Versions are installed one at a time: a second installer waits for the first.
_INSTALL_LOCK = "SELECT pg_advisory_xact_lock(hashtext('scheduler.policies'))"
_CURRENT = text("SELECT version, document FROM scheduler.policies ORDER BY version DESC LIMIT 1")
_INSERT = text(
    "INSERT INTO scheduler.policies (document, source, installed_by, installed_at)"
    " VALUES (CAST(:document AS jsonb), :source, :installed_by, now()) RETURNING version"
)


async def current_policy(session: AsyncSession) -> PolicyInForce:
    """The policy in force: the newest version (the shipped defaults on a fresh database)."""
    row = (await session.execute(_CURRENT)).one_or_none()
    if row is None:
        await session.execute(text(_INSTALL_LOCK))
        row = (await session.execute(_CURRENT)).one_or_none()
        if row is None:
            source = DEFAULT_POLICY_FILE.read_text(encoding="utf-8")
            rules = parse_policy(source)
            return await install_policy(session, rules, source, installed_by="policy.yaml")
    return PolicyInForce(int(row.version), VisitPolicy.model_validate(row.document))


async def install_policy(
    session: AsyncSession, rules: VisitPolicy, source: str, *, installed_by: str
) -> PolicyInForce:
    """Install `rules` (already validated) as the next version."""
    await session.execute(text(_INSTALL_LOCK))
    version = (
        await session.execute(
            _INSERT,
            {
                "document": rules.model_dump_json(),
                "source": source,
                "installed_by": installed_by,
            },
        )
    ).scalar_one()
    return PolicyInForce(int(version), rules)


async def policy_source(session: AsyncSession, version: int) -> str | None:
    found = await session.execute(
        text("SELECT source FROM scheduler.policies WHERE version = :v"), {"v": version}
    )
    return found.scalar_one_or_none()
