"""The client of another service's REST API: its cache is bounded and least-recently-used
entries go first, so a worker's memory does not grow with every loan it looks up."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from shared.service_client import ServiceClient


def owner() -> tuple[FastAPI, list[str]]:
    """A stand-in owner service that counts the requests it answers."""
    app = FastAPI()
    seen: list[str] = []

    @app.get("/v1/loans/{loan_id}")
    async def loan(loan_id: str) -> dict[str, str]:
        seen.append(loan_id)
        return {"loan_id": loan_id}

    return app, seen


async def test_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    app, seen = owner()
    client = ServiceClient(
        base_url="http://owner",
        jwt_secret="x" * 32,
        caller="test",
        cache_entries=2,
        transport=httpx.ASGITransport(app=app),
    )
    try:
        for loan_id in ("A", "B", "A", "C"):  # A used again before C pushes B out
            await client.get_json(f"/v1/loans/{loan_id}")
        assert seen == ["A", "B", "C"]
        await client.get_json("/v1/loans/A")
        await client.get_json("/v1/loans/C")
        assert seen == ["A", "B", "C"]  # both still cached
        await client.get_json("/v1/loans/B")
        assert seen == ["A", "B", "C", "B"]  # B was evicted
    finally:
        await client.aclose()
