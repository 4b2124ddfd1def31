"""A loan's region is used while fresh, used and refreshed behind the capture while not
older than twice that, and asked for in front of the capture after; an unknown loan is
never remembered; a failed refresh keeps the region until its limit; refreshes are spread
out in time and a few at a time."""

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
    regions = LoanRegions(30, clock=clock, draw=lambda: 0.0)
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
    regions = LoanRegions(30, clock=clock, draw=lambda: 0.0)
    assert await regions.region("L-9", scheduler.region_of) is None
    scheduler.regions["L-9"] = "R-south"  # registered since
    assert await regions.region("L-9", scheduler.region_of) == "R-south"
    assert scheduler.asked == ["L-9", "L-9"]


async def test_a_failed_refresh_keeps_the_region_until_its_limit() -> None:
    scheduler, clock = Scheduler(), Clock()
    regions = LoanRegions(30, clock=clock, draw=lambda: 0.0)
    assert await regions.region("L-1", scheduler.region_of) == "R-east"
    scheduler.down = True
    clock.now += 45
    assert await regions.region("L-1", scheduler.region_of) == "R-east"
    await asyncio.sleep(0)
    clock.now += 16  # 61 s old: no longer usable, and the scheduler is down
    with pytest.raises(OwnerUnavailable):
        await regions.region("L-1", scheduler.region_of)
    await regions.close()


async def test_loans_learnt_together_are_refreshed_apart() -> None:
    scheduler, clock = Scheduler(), Clock()
    scheduler.regions["L-2"] = "R-east"
    draws = iter([0.0, 0.9])  # L-1 refreshed once 30 s old, L-2 once 16.5 s old
    regions = LoanRegions(30, clock=clock, draw=lambda: next(draws))
    for loan_id in ("L-1", "L-2"):
        assert await regions.region(loan_id, scheduler.region_of) == "R-east"
    clock.now += 17
    for loan_id in ("L-1", "L-2"):
        assert await regions.region(loan_id, scheduler.region_of) == "R-east"
    await asyncio.sleep(0)
    assert scheduler.asked == ["L-1", "L-2", "L-2"]
    await regions.close()


async def test_at_most_so_many_refreshes_run_at_once_the_rest_start_later() -> None:
    scheduler, clock = Scheduler(), Clock()
    loans = [f"L-{n}" for n in range(5)]
    scheduler.regions |= dict.fromkeys(loans, "R-east")
    release = asyncio.Event()

    async def slow_region_of(loan_id: str) -> str | None:
        if len(scheduler.asked) >= len(loans):  # the fetches in front are answered at once
            await release.wait()
        return await scheduler.region_of(loan_id)

    regions = LoanRegions(30, clock=clock, max_refreshing=2, draw=lambda: 0.0)
    for loan_id in loans:
        await regions.region(loan_id, slow_region_of)
    clock.now += 31
    for loan_id in loans:  # stale, all of them: used, and refreshed behind, two at a time
        assert await regions.region(loan_id, slow_region_of) == "R-east"
    await asyncio.sleep(0)
    assert regions.refreshing == 2
    release.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert regions.refreshing == 0
    assert scheduler.asked == [*loans, "L-0", "L-1"]
    # A later capture of a loan left out starts its refresh then.
    assert await regions.region("L-4", slow_region_of) == "R-east"
    for _ in range(3):
        await asyncio.sleep(0)
    assert scheduler.asked[-1] == "L-4"
    await regions.close()
