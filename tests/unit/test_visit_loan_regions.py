"""A loan's region is used while fresh, used and refreshed behind the capture while not
older than twice that, and asked for in front of the capture after; an unknown loan is
never remembered; a failed refresh keeps the region until its limit."""

from __future__ import annotations

import asyncio

import pytest

from services.visits.loan_regions import LoanRegions
from shared.service_client import OwnerUnavailable


class Scheduler:
    def __init__(self) -> None:
        self.regions: dict[str, str] = {"L-1": "R-east"}
        self.asked: list[str] = []
        self.down = False

    async def region_of(self, loan_id: str) -> str | None:
        self.asked.append(loan_id)
        if self.down:
            raise OwnerUnavailable("scheduler down")
        return self.regions.get(loan_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_fresh_then_refreshed_behind_then_asked_in_front() -> None:
    scheduler, clock = Scheduler(), Clock()
    regions = LoanRegions(30, clock=clock)
    assert await regions.region("L-1", scheduler.region_of) == "R-east"
    clock.now += 29
    assert await regions.region("L-1", scheduler.region_of) == "R-east"
    assert scheduler.asked == ["L-1"]
    # Stale: the capture gets the known region at once, a refresh runs behind it.
    scheduler.regions["L-1"] = "R-west"
    clock.now += 2
    assert await regions.region("L-1", scheduler.region_of) == "R-east"
    await asyncio.sleep(0)
    assert scheduler.asked == ["L-1", "L-1"]
    assert await regions.region("L-1", scheduler.region_of) == "R-west"
    # Past twice the freshness nothing known is used: asked in front.
    scheduler.regions["L-1"] = "R-north"
    clock.now += 61
    assert await regions.region("L-1", scheduler.region_of) == "R-north"
    await regions.close()


async def test_an_unknown_loan_is_asked_about_every_time() -> None:
    scheduler, clock = Scheduler(), Clock()
    regions = LoanRegions(30, clock=clock)
    assert await regions.region("L-9", scheduler.region_of) is None
    scheduler.regions["L-9"] = "R-south"  # registered since
    assert await regions.region("L-9", scheduler.region_of) == "R-south"
    assert scheduler.asked == ["L-9", "L-9"]


async def test_a_failed_refresh_keeps_the_region_until_its_limit() -> None:
    scheduler, clock = Scheduler(), Clock()
    regions = LoanRegions(30, clock=clock)
    assert await regions.region("L-1", scheduler.region_of) == "R-east"
    scheduler.down = True
    clock.now += 45
    assert await regions.region("L-1", scheduler.region_of) == "R-east"
    await asyncio.sleep(0)
    clock.now += 16  # 61 s old: no longer usable, and the scheduler is down
    with pytest.raises(OwnerUnavailable):
        await regions.region("L-1", scheduler.region_of)
    await regions.close()
