"""schemathesis against the three OpenAPI documents, on the real database: whatever the
documents allow (and what they forbid), no answer is a 500, and every answer's status,
content type and body are the ones its document names.

Each API is tried as the roles that use it: reading and writing roles, and one the route
refuses (its 403 must be documented too). Bounded and derandomised, so a run is the same
every time and stays within the suite's time budget.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from services.alerts import main as alerts_main
from services.alerts.settings import AlertsSettings
from services.scheduler import main as scheduler_main
from services.scheduler.settings import SchedulerSettings
from services.visits import main as visits_main
from services.visits.settings import VisitsSettings
from tests.conftest import Infra
from tests.support import ADMIN, CORE_BANKING, auth, fetchval, loan_body, new_id

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Per operation and role; with the example and coverage phases this is about 30 s for all.
MAX_EXAMPLES = 15
SEED = 20261130
AGENT = "AG-conformance"


@schemathesis.serializer("application/x-ndjson")
def ndjson(_: Any, value: Any) -> bytes:
    """The loan import body: the document gives it as an array of lines."""
    lines = value if isinstance(value, list) else [value]
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()


@dataclass(frozen=True)
class Apps:
    scheduler: FastAPI
    visits: FastAPI
    alerts: FastAPI
    # Ids that exist, offered to the generator beside random ones: without them a random
    # task or alert id is always a 404 and the success answers would go untried.
    known: dict[str, str]


@pytest.fixture(scope="module")
def apps(infra: Infra) -> Iterator[Apps]:
    """Fresh apps (schemathesis runs their lifespans in its own event loop), without workers:
    the documents are about what the APIs answer."""
    common: dict[str, Any] = {"env": "test", "database_url": infra.database_url}
    scheduler = scheduler_main.build_app(SchedulerSettings(**common))
    visits = visits_main.build_app(
        VisitsSettings(**common, http_retries=0),
        scheduler_transport=httpx.ASGITransport(app=scheduler),
    )
    alerts = alerts_main.build_app(AlertsSettings(**common))
    known = {"loan_id": new_id("L"), "agent_id": AGENT, "alert_id": str(uuid.uuid4())}
    region = new_id("R")
    # Through schemathesis's client: the app's lifespan must run in schemathesis's loop.
    with asgi.get_client(scheduler) as client:  # type: ignore[arg-type]
        agent: dict[str, Any] = {
            "name": "李娜",
            "region": region,
            "methods": ["phone"],
            "daily_capacity": 9,
        }
        put = client.put(f"/v1/agents/{AGENT}", json=agent, headers=ADMIN)
        assert put.status_code == 200, put.text
        loan = client.put(
            f"/v1/loans/{known['loan_id']}", json=loan_body(region=region), headers=CORE_BANKING
        )
        assert loan.status_code == 201, loan.text
        tasks = client.get(f"/v1/loans/{known['loan_id']}/tasks", headers=ADMIN)
        known["task_id"] = tasks.json()["items"][0]["task_id"]
    asyncio.run(
        fetchval(
            infra.database_url,
            "INSERT INTO alerts.alerts (alert_id, loan_id, rule, category, severity, status,"
            " reason, recommended_action, source_event_id, created_at, family, rule_version,"
            " occurrences, last_seen_at, last_raised_at, severity_since) VALUES ($1, $2,"
            " 'dpd_90', 'repayment', 'critical', 'open', '95 days past due', 'legal_review',"
            " $3, now(), 'arrears', 1, 1, now(), now(), now())",
            uuid.UUID(known["alert_id"]),
            known["loan_id"],
            uuid.uuid4(),
        )
    )
    yield Apps(scheduler, visits, alerts, known)
    asgi.shutdown_lifespans()


def _load(app: FastAPI, known: dict[str, str]) -> OpenApiSchema:
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {"deterministic": True, "max-examples": MAX_EXAMPLES},
            "dictionaries": {name: {"values": [value]} for name, value in known.items()},
            "parameters": {
                f"{location}.{name}": {"dictionary": name, "probability": 0.5}
                for name in known
                for location in ("path", "query")
            },
        }
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


@pytest.fixture(scope="module")
def scheduler_api(apps: Apps) -> OpenApiSchema:
    return _load(apps.scheduler, apps.known)


@pytest.fixture(scope="module")
def visits_api(apps: Apps, scheduler_api: OpenApiSchema) -> OpenApiSchema:
    # After the scheduler's: its lifespan must be running when visits asks it about tasks.
    return _load(apps.visits, apps.known)


@pytest.fixture(scope="module")
def alerts_api(apps: Apps) -> OpenApiSchema:
    return _load(apps.alerts, apps.known)


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32 renames the test node per operation through `_nodeid`, which
    # pytest 9 no longer has; give it one to read (reports keep pytest's own node id).
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


scheduler = schemathesis.pytest.from_fixture("scheduler_api")
visits = schemathesis.pytest.from_fixture("visits_api")
alerts = schemathesis.pytest.from_fixture("alerts_api")

bounded = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _conforms(case: Any, role: str, sub: str) -> None:
    case.call_and_validate(headers=auth(role, sub), checks=CHECKS)  # type: ignore[arg-type]


@scheduler.parametrize()
@bounded
def test_scheduler_as_admin(case: Any) -> None:
    _conforms(case, "admin", "root")


@scheduler.parametrize()
@bounded
def test_scheduler_as_core_banking(case: Any) -> None:
    _conforms(case, "integration", "core-banking")


@scheduler.parametrize()
@bounded
def test_scheduler_as_agent(case: Any) -> None:
    _conforms(case, "agent", AGENT)


@visits.parametrize()
@bounded
def test_visits_as_agent(case: Any) -> None:
    _conforms(case, "agent", AGENT)


@visits.parametrize()
@bounded
def test_visits_as_supervisor(case: Any) -> None:
    _conforms(case, "supervisor", "sup-conformance")


@alerts.parametrize()
@bounded
def test_alerts_as_ops(case: Any) -> None:
    _conforms(case, "ops", "desk-conformance")
