"""The tamper-evident record of visits on the real database (issue 7): every visit is chained
to its loan's previous one, concurrent visits still make one chain, and a row altered or
inserted with SQL behind the service's back is found by the endpoint and the command."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Any

from services.visits.chain import GENESIS
from services.visits.settings import VisitsSettings
from services.visits.verify import verify
from shared import devstack
from tests.conftest import ROOT, Infra
from tests.integration.conftest import System
from tests.integration.test_visits import assert_problem, assign, post_visit, visit_body
from tests.support import ADMIN, auth, fetchval, new_id

AUDITOR = auth("ops", "desk-audit")


async def verify_loan(system: System, loan_id: str) -> dict[str, Any]:
    response = await system.visits.get(
        "/v1/visits/verify", params={"loan_id": loan_id}, headers=AUDITOR
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def run_verify_command(database_url: str, *args: str) -> tuple[int, dict[str, Any]]:
    """`python -m services.visits.verify ARGS` as an operator runs it."""
    env = {**os.environ, "DATABASE_URL": database_url, "ENV": "test", "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "ignore::UserWarning",
        "-m",
        "services.visits.verify",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    assert out, err.decode()
    return process.returncode, json.loads(out.decode().strip().splitlines()[-1])


async def test_visits_of_a_loan_are_chained_and_their_proofs_link(system: System) -> None:
    job = await assign(system)
    first = await post_visit(system, job.headers, visit_body(job.loan_id, job.task_id))
    second = await post_visit(system, job.headers, visit_body(job.loan_id))
    assert first.status_code == second.status_code == 201, second.text

    proofs = []
    for visit in (first.json(), second.json()):
        proof = await system.visits.get(
            f"/v1/visits/{visit['visit_id']}/proof", headers=job.headers
        )
        assert proof.status_code == 200, proof.text
        proofs.append(proof.json())
    assert [p["seq"] for p in proofs] == [1, 2]
    assert proofs[0]["prev_hash"] == GENESIS
    assert proofs[1]["prev_hash"] == proofs[0]["entry_hash"]
    assert all(len(p["payload_hash"]) == 64 for p in proofs)

    result = await verify_loan(system, job.loan_id)
    assert result == {
        "loan_id": job.loan_id,
        "entries_checked": 2,
        "intact": True,
        "first_break": None,
    }

    # Another agent's visit's proof looks absent, like the visit.
    stranger = auth("agent", new_id("AG"))
    hidden = await system.visits.get(
        f"/v1/visits/{first.json()['visit_id']}/proof", headers=stranger
    )
    assert_problem(hidden, 404)
    assert_problem(await system.visits.get(f"/v1/visits/{uuid.uuid4()}/proof", headers=ADMIN), 404)


async def test_concurrent_visits_of_one_loan_make_one_chain(system: System) -> None:
    job = await assign(system)
    responses = await asyncio.gather(
        *(post_visit(system, job.headers, visit_body(job.loan_id)) for _ in range(8))
    )
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    sql = "SELECT array_agg(seq ORDER BY seq) FROM visits.visit_chain WHERE loan_id = $1"
    assert list(await fetchval(system.database_url, sql, job.loan_id)) == list(range(1, 9))
    result = await verify_loan(system, job.loan_id)
    assert (result["intact"], result["entries_checked"]) == (True, 8)


async def test_a_visit_altered_in_the_database_is_found_by_endpoint_and_command(
    system: System,
) -> None:
    job = await assign(system)
    visits = []
    for _ in range(3):
        response = await post_visit(system, job.headers, visit_body(job.loan_id))
        assert response.status_code == 201, response.text
        visits.append(response.json()["visit_id"])
    code, report = await run_verify_command(system.database_url, "--loan", job.loan_id)
    assert (code, report["intact"], report["entries_checked"]) == (0, True, 3)

    # Someone with database access hides a pledged car in the second visit's findings.
    await fetchval(
        system.database_url,
        "UPDATE visits.visits SET findings = jsonb_set(findings, '{encumbrance_detected}',"
        " 'true') WHERE visit_id = $1",
        uuid.UUID(visits[1]),
    )

    result = await verify_loan(system, job.loan_id)
    assert result["intact"] is False
    broken = result["first_break"]
    assert (broken["loan_id"], broken["seq"], broken["visit_id"]) == (job.loan_id, 2, visits[1])
    assert "altered" in broken["reason"]

    code, report = await run_verify_command(system.database_url, "--loan", job.loan_id)
    assert code == 1
    assert report["first_break"] == broken
    # Without --loan the whole record is checked, and this loan's break is among what fails.
    code, everything = await run_verify_command(system.database_url)
    assert (code, everything["intact"]) == (1, False)

    # The proof still shows what was recorded; the row no longer matches it.
    proof = await system.visits.get(f"/v1/visits/{visits[1]}/proof", headers=job.headers)
    assert proof.json()["seq"] == 2


async def test_a_visit_inserted_behind_the_services_back_is_found(system: System) -> None:
    job = await assign(system)
    recorded = await post_visit(system, job.headers, visit_body(job.loan_id))
    assert recorded.status_code == 201, recorded.text
    forged = uuid.uuid4()
    await fetchval(
        system.database_url,
        "INSERT INTO visits.visits (visit_id, agent_id, idempotency_key, request_hash, loan_id,"
        " method, outcome, started_at, ended_at, findings, created_at) SELECT $1, agent_id,"
        " 'forged', request_hash, loan_id, method, outcome, started_at, ended_at, findings,"
        " now() FROM visits.visits WHERE visit_id = $2",
        forged,
        uuid.UUID(recorded.json()["visit_id"]),
    )
    result = await verify_loan(system, job.loan_id)
    assert result["intact"] is False
    assert result["first_break"]["visit_id"] == str(forged)
    assert result["first_break"]["seq"] is None


async def test_only_oversight_roles_verify(system: System) -> None:
    agent = await system.visits.get("/v1/visits/verify", headers=auth("agent", new_id("AG")))
    assert_problem(agent, 403)
    bad = await system.visits.get(
        "/v1/visits/verify", params={"loan_id": "no spaces"}, headers=AUDITOR
    )
    assert assert_problem(bad, 422)["errors"][0]["field"] == "query.loan_id"
    unknown = await verify_loan(system, new_id("L"))
    assert (unknown["intact"], unknown["entries_checked"]) == (True, 0)


async def test_the_migration_chains_visits_recorded_before_it(infra: Infra) -> None:
    database = "huifang_chain_backfill"
    await asyncio.to_thread(devstack.create_database, infra.database_url, database)
    url = devstack.with_database(infra.database_url, database)
    await asyncio.to_thread(devstack.downgrade, url, "visits", "base")
    await asyncio.to_thread(devstack.migrate, url, "visits", "0002")
    loans = [new_id("L"), new_id("L")]
    for index in range(5):
        await fetchval(
            url,
            "INSERT INTO visits.visits (visit_id, agent_id, idempotency_key, request_hash,"
            " loan_id, method, outcome, started_at, ended_at, findings, geo_lat, geo_lon,"
            " notes, created_at) VALUES ($1, 'AG-1', $2, 'h', $3, 'field', 'completed',"
            " now() - interval '1 hour', now(), '{\"vehicle_sighted\": true}', 31.23, 121.47,"
            " '车在', now() + $4 * interval '1 second')",
            uuid.uuid4(),
            f"K-{index}",
            loans[index % 2],
            index,
        )
    await asyncio.to_thread(devstack.migrate, url, "visits", "head")

    settings = VisitsSettings(env="test", database_url=url)
    result = await verify(settings, None)
    assert (result.intact, result.entries_checked) == (True, 5)
    sql = "SELECT array_agg(seq ORDER BY seq) FROM visits.visit_chain WHERE loan_id = $1"
    assert list(await fetchval(url, sql, loans[0])) == [1, 2, 3]
