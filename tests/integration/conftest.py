"""The integration tier: the three services in-process with their real workers, against
the session's real PostgreSQL and broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Infra
from tests.system import System, in_process_system

__all__ = ["System"]


@pytest.fixture(scope="session")
async def system(infra: Infra) -> AsyncIterator[System]:
    async with in_process_system(infra.database_url, infra.bootstrap) as running:
        yield running
