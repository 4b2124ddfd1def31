"""Load the reviewed rules file into `alerts.rule_sets` under its version.

`python -m services.alerts.rules_admin load [FILE]` (DATABASE_URL as the services read it);
the alerts worker loads the file it ships with at start. Loading a version again with the
same content is a no-op; loading changed content under a version already loaded is refused,
so an alert's `rule_version` always means one set of rules.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from services.alerts import rules
from services.alerts.models import RuleSetRow
from services.alerts.settings import AlertsSettings
from shared.db import engine_for, make_session_factory, unit_of_work, utcnow


async def load(session: AsyncSession, ruleset: rules.RuleSet) -> bool:
    """Store the rule set under its version; True if it was new. Raises RuleSetError if the
    version holds other rules."""
    row = {
        "version": ruleset.version,
        "digest": ruleset.digest,
        "body": dict(ruleset.body),
        "loaded_at": utcnow(),
    }
    stmt = insert(RuleSetRow).values(row).on_conflict_do_nothing(index_elements=["version"])
    inserted = (await session.execute(stmt.returning(col(RuleSetRow.version)))).first()
    if inserted is not None:
        return True
    stored = await session.execute(
        select(col(RuleSetRow.digest)).where(col(RuleSetRow.version) == ruleset.version)
    )
    if stored.scalar_one() != ruleset.digest:
        raise rules.RuleSetError(
            f"rule set version {ruleset.version} is loaded with other rules; "
            "bump `version` in the rules file"
        )
    return False


async def load_into(sessions: async_sessionmaker[AsyncSession], ruleset: rules.RuleSet) -> bool:
    async with unit_of_work(sessions) as session:
        return await load(session, ruleset)


async def _main(argv: list[str]) -> int:
    if not argv or argv[0] != "load" or len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[1]) if len(argv) == 2 else rules.RULES_FILE
    ruleset = rules.parse_rule_set(path.read_text())
    engine = engine_for(AlertsSettings(), pool_size=1)
    try:
        new = await load_into(make_session_factory(engine), ruleset)
    finally:
        await engine.dispose()
    state = "loaded" if new else "already loaded"
    print(f"rule set version {ruleset.version} ({ruleset.digest[:12]}) {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(_main(sys.argv[1:])))
