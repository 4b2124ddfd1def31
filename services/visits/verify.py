"""Verify the tamper-evident record of visits (and of supervisors' review decisions) from
the stored rows.

`python -m services.visits.verify [--loan L]` prints the result as JSON and exits 0 when
every chain holds, 1 at the first entry that does not (the same check as
`GET /v1/visits/verify`). Reads `DATABASE_URL` like the service.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

from services.visits import service
from services.visits.schemas import ChainVerification
from services.visits.settings import VisitsSettings
from shared.db import engine_for, make_session_factory, unit_of_work
from shared.validation import ID_PATTERN


async def verify(settings: VisitsSettings, loan_id: str | None) -> ChainVerification:
    engine = engine_for(settings, pool_size=1)
    try:
        async with unit_of_work(make_session_factory(engine)) as session:
            return await service.verify_chains(session, loan_id)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.visits.verify", description=__doc__)
    parser.add_argument("--loan", help="verify only this loan's chain")
    args = parser.parse_args(argv)
    loan_id: str | None = args.loan
    if loan_id is not None and re.fullmatch(ID_PATTERN, loan_id) is None:
        parser.error(f"--loan must match {ID_PATTERN}")
    result = asyncio.run(verify(VisitsSettings(), loan_id))
    print(result.model_dump_json())
    return 0 if result.intact else 1


if __name__ == "__main__":
    sys.exit(main())
