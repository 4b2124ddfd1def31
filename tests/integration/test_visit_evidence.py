"""Evidence on the real database (issue 7): the two-step upload checked on the bytes, its
SHA-256 and stored bytes, who may fetch and attach it, a completed field visit's photo, the
chain covering the evidence, supervisors reading their region, and per-agent rate limits."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx

from services.visits.settings import VisitsSettings
from shared.devstack import free_port
from tests.integration.conftest import System
from tests.integration.test_visit_chain import verify_loan
from tests.integration.test_visits import (
    Assignment,
    assert_problem,
    assign,
    post_visit,
    visit_body,
    visits_against,
)
from tests.support import (
    ADMIN,
    CLEAN_FINDINGS,
    auth,
    fetchval,
    new_id,
    png,
    supervisor,
    upload_photo,
)

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
PDF = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
HTML = b"<!doctype html><script>alert(document.cookie)</script>"


async def upload(
    system: System, headers: dict[str, str], data: bytes, content_type: str, **params: str
) -> httpx.Response:
    return await system.visits.post(
        "/v1/evidence",
        content=data,
        params=params,
        headers=headers | {"Content-Type": content_type},
    )


def field_visit(job: Assignment, evidence: list[str], **overrides: Any) -> dict[str, Any]:
    return visit_body(
        job.loan_id,
        method="field",
        geo={"lat": 31.23, "lon": 121.47},
        findings=CLEAN_FINDINGS,
        evidence=evidence,
        **overrides,
    )


async def evidence_rows(system: System, uploaded_by: str) -> int:
    sql = "SELECT count(*) FROM visits.evidence WHERE uploaded_by = $1"
    count: int = await fetchval(system.database_url, sql, uploaded_by)
    return count


async def test_an_upload_records_its_sha256_and_stores_the_very_bytes(system: System) -> None:
    job = await assign(system)
    photo = png("front of the car")
    created = await upload(system, job.headers, photo, "image/png")
    assert created.status_code == 201, created.text
    evidence = created.json()
    sha256 = hashlib.sha256(photo).hexdigest()
    assert (evidence["sha256"], evidence["size_bytes"], evidence["kind"]) == (
        sha256,
        len(photo),
        "photo",
    )
    assert (evidence["content_type"], evidence["visit_id"]) == ("image/png", None)
    row = await fetchval(
        system.database_url,
        "SELECT sha256 FROM visits.evidence WHERE evidence_id = $1 AND uploaded_by = $2",
        uuid.UUID(evidence["evidence_id"]),
        job.agent_id,
    )
    assert row == sha256
    stored = VisitsSettings().evidence_dir / sha256[:2] / sha256
    assert stored.read_bytes() == photo

    # The phone lost the answer and uploads again: the same evidence, nothing new.
    again = await upload(system, job.headers, photo, "image/png; charset=binary")
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == evidence
    assert await evidence_rows(system, job.agent_id) == 1
    # The same bytes as a document are another claim about them: a conflict.
    assert_problem(await upload(system, job.headers, photo, "image/png", kind="document"), 409)

    fetched = await system.visits.get(
        f"/v1/evidence/{evidence['evidence_id']}", headers=job.headers
    )
    assert fetched.status_code == 200
    assert fetched.content == photo
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.headers["x-content-type-options"] == "nosniff"
    assert fetched.headers["etag"] == f'"{sha256}"'

    scan = await upload(system, job.headers, PDF, "application/pdf")
    assert (scan.status_code, scan.json()["kind"]) == (201, "document"), scan.text
    jpeg = await upload(system, job.headers, JPEG, "image/jpeg", kind="document")
    assert (jpeg.status_code, jpeg.json()["kind"]) == (201, "document"), jpeg.text


async def test_the_bytes_must_be_what_the_content_type_declares(system: System) -> None:
    job = await assign(system)
    cases = [
        (png(), "image/jpeg", 422, "body"),  # a PNG declared as a JPEG
        (HTML, "image/png", 422, "body"),  # a web page posing as a photo
        (b"", "image/png", 422, "body"),
        (HTML, "text/html", 415, "header.content-type"),
        (JPEG, "application/octet-stream", 415, "header.content-type"),
    ]
    for data, declared, status, field in cases:
        response = await upload(system, job.headers, data, declared)
        problem = assert_problem(response, status)
        assert [e["field"] for e in problem["errors"]] == [field], (declared, problem)
    not_a_photo = await upload(system, job.headers, PDF, "application/pdf", kind="photo")
    assert assert_problem(not_a_photo, 422)["errors"][0]["field"] == "query.kind"
    missing = await system.visits.post("/v1/evidence", content=png(), headers=job.headers)
    assert_problem(missing, 415)
    assert await evidence_rows(system, job.agent_id) == 0
    # Partners and the desk upload nothing.
    for caller in (auth("integration", "gps-partner"), auth("ops", "desk")):
        assert_problem(await upload(system, caller, png(), "image/png"), 403)


async def test_evidence_past_its_size_limit_is_refused_as_it_streams(system: System) -> None:
    settings = VisitsSettings(env="test", database_url=system.database_url, max_evidence_bytes=4096)
    agent = auth("agent", new_id("AG"))
    photo = png()
    padded = photo + b"\x00" * (4096 - len(photo))
    async with visits_against(settings) as visits:
        at_limit = await visits.post(
            "/v1/evidence", content=padded, headers=agent | {"Content-Type": "image/png"}
        )
        assert at_limit.status_code == 201, at_limit.text

        async def chunks() -> Any:
            # Chunked, with no Content-Length to refuse up front: counted as it arrives.
            yield padded
            yield b"\x00"

        over = await visits.post(
            "/v1/evidence", content=chunks(), headers=agent | {"Content-Type": "image/png"}
        )
        assert_problem(over, 413)
    # The system's own limit is 10 MiB: a JSON route keeps its 1 MiB.
    assert VisitsSettings().max_evidence_bytes == 10 * 1024 * 1024
    assert VisitsSettings().max_body_bytes == 1024 * 1024


async def test_another_agent_can_neither_fetch_nor_attach_an_upload(system: System) -> None:
    owner, other = await assign(system), await assign(system)
    photo = await upload_photo(system.visits, owner.headers)
    url = f"/v1/evidence/{photo}"

    assert_problem(await system.visits.get(url, headers=other.headers), 404)
    # The same bytes uploaded by another agent are that agent's own evidence.
    fetched = await system.visits.get(url, headers=owner.headers)
    theirs = await upload(system, other.headers, fetched.content, "image/png")
    assert theirs.status_code == 201 and theirs.json()["evidence_id"] != photo

    stolen = await post_visit(system, other.headers, field_visit(other, [photo]))
    problem = assert_problem(stolen, 422)
    assert problem["errors"] == [
        {"field": "body.evidence[0]", "message": "no such evidence uploaded by you"}
    ]
    ghost = await post_visit(system, owner.headers, field_visit(owner, [photo, str(uuid.uuid4())]))
    assert [e["field"] for e in assert_problem(ghost, 422)["errors"]] == ["body.evidence[1]"]
    sql = "SELECT count(*) FROM visits.visits WHERE loan_id = ANY($1::text[])"
    assert await fetchval(system.database_url, sql, [owner.loan_id, other.loan_id]) == 0

    # A supervisor sees an upload once it is on a visit of its region; the desk always.
    assert_problem(await system.visits.get(url, headers=owner.supervisor), 404)
    assert (await system.visits.get(url, headers=auth("ops", "desk"))).status_code == 200
    recorded = await post_visit(system, owner.headers, field_visit(owner, [photo]))
    assert recorded.status_code == 201, recorded.text
    assert recorded.json()["evidence"] == [
        {
            "evidence_id": photo,
            "kind": "photo",
            "sha256": hashlib.sha256(fetched.content).hexdigest(),
        }
    ]
    assert (await system.visits.get(url, headers=owner.supervisor)).status_code == 200
    assert_problem(await system.visits.get(url, headers=supervisor(new_id("R"))), 404)

    # Once on a visit, it is on no other, not even the same agent's.
    twice = await post_visit(system, owner.headers, field_visit(owner, [photo]))
    assert assert_problem(twice, 422)["errors"] == [
        {"field": "body.evidence[0]", "message": "already attached to another visit"}
    ]


async def test_a_completed_field_visit_needs_a_photo_not_only_a_scan(system: System) -> None:
    job = await assign(system)
    no_photo = await post_visit(system, job.headers, field_visit(job, []))
    assert [e["field"] for e in assert_problem(no_photo, 422)["errors"]] == ["body.evidence"]
    scan = await upload(system, job.headers, PDF + job.agent_id.encode(), "application/pdf")
    only_a_scan = await post_visit(
        system, job.headers, field_visit(job, [scan.json()["evidence_id"]])
    )
    assert [e["field"] for e in assert_problem(only_a_scan, 422)["errors"]] == ["body.evidence"]
    # Refused captures attached nothing: the scan is still free.
    sql = "SELECT visit_id FROM visits.evidence WHERE evidence_id = $1"
    assert await fetchval(system.database_url, sql, uuid.UUID(scan.json()["evidence_id"])) is None

    photo = await upload_photo(system.visits, job.headers)
    key = new_id("K")
    body = field_visit(job, [scan.json()["evidence_id"], photo])
    recorded = await post_visit(system, job.headers, body, key)
    assert recorded.status_code == 201, recorded.text
    assert {e["kind"] for e in recorded.json()["evidence"]} == {"photo", "document"}
    # A retry replays, although its evidence is now attached (to this very visit).
    replayed = await post_visit(system, job.headers, body, key)
    assert replayed.status_code == 201 and replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json() == recorded.json()
    listed = await system.visits.get(
        "/v1/visits", params={"loan_id": job.loan_id}, headers=job.headers
    )
    assert listed.json()["items"] == [recorded.json()]


async def test_the_chain_finds_a_photo_swapped_in_the_database(system: System) -> None:
    job = await assign(system)
    photo = await upload_photo(system.visits, job.headers)
    recorded = await post_visit(system, job.headers, field_visit(job, [photo]))
    assert recorded.status_code == 201, recorded.text
    visit_id = recorded.json()["visit_id"]
    proof = await system.visits.get(f"/v1/visits/{visit_id}/proof", headers=job.headers)
    assert proof.json()["format"] == 3
    assert (await verify_loan(system, job.loan_id))["intact"] is True

    db = system.database_url
    original = await fetchval(
        db, "SELECT sha256 FROM visits.evidence WHERE evidence_id = $1", uuid.UUID(photo)
    )
    forged = hashlib.sha256(b"another car").hexdigest()
    swap = "UPDATE visits.evidence SET sha256 = $2 WHERE evidence_id = $1"
    await fetchval(db, swap, uuid.UUID(photo), forged)
    try:
        result = await verify_loan(system, job.loan_id)
        assert result["intact"] is False
        assert result["first_break"]["visit_id"] == visit_id
        assert "evidence" in result["first_break"]["reason"]
    finally:
        await fetchval(db, swap, uuid.UUID(photo), original)
    assert (await verify_loan(system, job.loan_id))["intact"] is True

    # Detaching it (a photo quietly removed from the record) is found too.
    detach = "UPDATE visits.evidence SET visit_id = $2 WHERE evidence_id = $1"
    await fetchval(db, detach, uuid.UUID(photo), None)
    try:
        assert (await verify_loan(system, job.loan_id))["intact"] is False
    finally:
        await fetchval(db, detach, uuid.UUID(photo), uuid.UUID(visit_id))


async def test_supervisors_read_the_visits_of_their_region_only(system: System) -> None:
    job = await assign(system)
    recorded = await post_visit(system, job.headers, visit_body(job.loan_id, job.task_id))
    assert recorded.status_code == 201, recorded.text
    visit_id = recorded.json()["visit_id"]
    region = await fetchval(
        system.database_url,
        "SELECT region FROM visits.visits WHERE visit_id = $1",
        uuid.UUID(visit_id),
    )
    assert region == job.region

    elsewhere = supervisor(new_id("R"))
    for url in (f"/v1/visits/{visit_id}", f"/v1/visits/{visit_id}/proof"):
        assert (await system.visits.get(url, headers=job.supervisor)).status_code == 200, url
        assert_problem(await system.visits.get(url, headers=elsewhere), 404)
    params = {"loan_id": job.loan_id}
    own = await system.visits.get("/v1/visits", params=params, headers=job.supervisor)
    assert [v["visit_id"] for v in own.json()["items"]] == [visit_id]
    other = await system.visits.get("/v1/visits", params=params, headers=elsewhere)
    assert other.json() == {"items": [], "next_cursor": None}
    no_region = auth("supervisor", "sup-1")
    assert_problem(await system.visits.get("/v1/visits", headers=no_region), 403)
    assert_problem(await system.visits.get(f"/v1/visits/{visit_id}", headers=no_region), 403)
    # Ops and admin read every region, read-only.
    for desk in (auth("ops", "desk"), ADMIN):
        listed = await system.visits.get("/v1/visits", params=params, headers=desk)
        assert [v["visit_id"] for v in listed.json()["items"]] == [visit_id]


async def test_captures_and_uploads_are_rate_limited_per_agent(system: System) -> None:
    settings = VisitsSettings(
        env="test",
        database_url=system.database_url,
        visit_captures_per_minute=2,
        evidence_uploads_per_minute=3,
        scheduler_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        http_retries=0,
        http_timeout_seconds=0.5,
    )
    agent, colleague = auth("agent", new_id("AG")), auth("agent", new_id("AG"))
    async with visits_against(settings) as visits:

        async def send(who: dict[str, str]) -> httpx.Response:
            return await visits.post(
                "/v1/evidence", content=png(), headers=who | {"Content-Type": "image/png"}
            )

        uploads = [await send(agent) for _ in range(4)]
        assert [r.status_code for r in uploads] == [201, 201, 201, 429]
        limited = assert_problem(uploads[-1], 429)
        assert "evidence uploads" in limited["detail"]
        # One token back every 20 s at three a minute.
        assert 1 <= int(uploads[-1].headers["retry-after"]) <= 20
        assert (await send(colleague)).status_code == 201

        async def capture(who: dict[str, str]) -> httpx.Response:
            # No scheduler behind this app: an allowed capture is a 503, a limited one 429.
            body = visit_body(new_id("L"))
            return await visits.post(
                "/v1/visits", json=body, headers=who | {"Idempotency-Key": new_id("K")}
            )

        captures = [(await capture(agent)).status_code for _ in range(3)]
        assert captures[-1] == 429 and 429 not in captures[:2], captures
