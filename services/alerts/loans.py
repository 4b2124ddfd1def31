"""Loan facts the alerts service needs but the scheduler owns (design.md, "Facts owned by
another service"): asked over REST, never read from the scheduler's schema."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from shared.service_client import ServiceClient


@dataclass(frozen=True)
class LoanFacts:
    """What the rules know of a registered loan."""

    # The contractual vehicle usage; None when the scheduler does not say.
    agreed_usage: str | None


# A registered loan's facts; None for a loan the scheduler does not know.
LoanLookup = Callable[[str], Awaitable[LoanFacts | None]]


class SchedulerLoans:
    def __init__(self, client: ServiceClient) -> None:
        self._client = client

    async def facts(self, loan_id: str) -> LoanFacts | None:
        """The loan as the scheduler registered it; None when it is not registered.

        Raises OwnerUnavailable when the scheduler is down, so the event is retried.
        """
        loan = await self._client.get_json(f"/v1/loans/{quote(loan_id, safe='')}")
        if loan is None:
            return None
        usage = loan.get("agreed_usage")
        return LoanFacts(agreed_usage=usage if isinstance(usage, str) else None)
