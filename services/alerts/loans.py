"""Loan facts the alerts service needs but the scheduler owns (design.md, "Facts owned by
another service"): asked over REST, never read from the scheduler's schema."""

from __future__ import annotations

from urllib.parse import quote

from shared.service_client import ServiceClient


class SchedulerLoans:
    def __init__(self, client: ServiceClient) -> None:
        self._client = client

    async def agreed_usage(self, loan_id: str) -> str | None:
        """The loan's contractual vehicle usage; None when the scheduler does not know it.

        Raises OwnerUnavailable when the scheduler is down, so the event is retried.
        """
        loan = await self._client.get_json(f"/v1/loans/{quote(loan_id, safe='')}")
        usage = loan.get("agreed_usage") if loan is not None else None
        return usage if isinstance(usage, str) else None
