"""Evidence never attached to a visit is deleted after `UNATTACHED_EVIDENCE_DAYS`, row and
stored bytes, by the visits worker's sweep (services/visits/retention.py), on the real
database and store: attached evidence, evidence a draft lists, and bytes another upload
still names are kept."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

from services.visits import retention
from services.visits.settings import VisitsSettings
from services.visits.stores import evidence_store_for
from shared.db import engine_for, make_session_factory, utcnow
from tests.integration.conftest import System
from tests.integration.test_visit_evidence import field_visit
from tests.integration.test_visits import assign, post_visit
from tests.support import fetchval, png, upload_photo


async def evidence_exists(system: System, evidence_id: str) -> bool:
    sql = "SELECT count(*) FROM visits.evidence WHERE evidence_id = $1"
    count: int = await fetchval(system.database_url, sql, uuid.UUID(evidence_id))
    return count == 1


async def test_unattached_evidence_is_deleted_after_its_age(system: System) -> None:
    settings = VisitsSettings(env="test", database_url=system.database_url)
    store = evidence_store_for(settings)
    engine = engine_for(settings, pool_size=1)
    sessions = make_session_factory(engine)
    job, other = await assign(system), await assign(system)
    marker = uuid.uuid4().hex
    shared_bytes, lone_bytes = png(f"shared-{marker}"), png(f"lone-{marker}")
    try:
        attached = await upload_photo(system.visits, job.headers)
        created = await post_visit(system, job.headers, field_visit(job, [attached]))
        assert created.status_code == 201, created.text
        in_draft = await upload_photo(system.visits, job.headers)
        draft = await system.visits.put(
            f"/v1/visit-drafts/{uuid.uuid4()}",
            json={"loan_id": job.loan_id, "evidence": [in_draft]},
            headers=job.headers,
        )
        assert draft.status_code == 200, draft.text
        # The same bytes uploaded by two agents: one object, named by two rows.
        shared = await upload_photo(system.visits, job.headers, shared_bytes)
        others = await upload_photo(system.visits, other.headers, shared_bytes)
        kept = await post_visit(system, other.headers, field_visit(other, [others]))
        assert kept.status_code == 201, kept.text
        lone = await upload_photo(system.visits, job.headers, lone_bytes)
        lone_object = hashlib.sha256(lone_bytes).hexdigest()
        shared_object = hashlib.sha256(shared_bytes).hexdigest()
        assert await store.get(lone_object) == lone_bytes
        assert await store.get(shared_object) == shared_bytes

        # Within the age nothing of these goes.
        await retention.sweep(sessions, settings, utcnow() + timedelta(days=6), store)
        for evidence_id in (attached, in_draft, shared, others, lone):
            assert await evidence_exists(system, evidence_id)

        swept = await retention.sweep(sessions, settings, utcnow() + timedelta(days=8), store)
        assert swept.evidence_purged >= 2
        assert swept.objects_deleted >= 1
        assert not await evidence_exists(system, lone)
        assert await store.get(lone_object) is None
        fetched = await system.visits.get(f"/v1/evidence/{lone}", headers=job.headers)
        assert fetched.status_code == 404
        # Its row is gone, its bytes stay: another agent's attached upload names them.
        assert not await evidence_exists(system, shared)
        assert await store.get(shared_object) == shared_bytes
        fetched = await system.visits.get(f"/v1/evidence/{others}", headers=other.headers)
        assert fetched.status_code == 200 and fetched.content == shared_bytes
        # Attached, or listed by a draft: kept.
        for evidence_id in (attached, in_draft, others):
            assert await evidence_exists(system, evidence_id)
        # An expired upload can no longer be attached: it is absent.
        late = await post_visit(system, job.headers, field_visit(job, [lone]))
        assert late.status_code == 422, late.text
    finally:
        await engine.dispose()
