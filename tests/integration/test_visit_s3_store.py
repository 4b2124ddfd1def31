"""The S3-compatible evidence store (services/visits/s3_store.py) against a real S3-protocol
server started here (moto's, over HTTP on 127.0.0.1), not a mock of the client: objects
named by their hash, idempotent puts, reads checked against the name, deletes; and the
visits API keeping and serving uploads with `EVIDENCE_STORE=s3`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from services.visits import main as visits_main
from services.visits.evidence_store import EvidenceCorrupted
from services.visits.s3_store import S3Store
from services.visits.settings import VisitsSettings
from services.visits.stores import evidence_store_for
from shared.devstack import free_port
from tests.integration.conftest import System
from tests.support import auth, new_id, png

BUCKET = "huifang-evidence"
CREDENTIALS = {"access_key_id": "test-key", "secret_access_key": "test-secret"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["access_key_id"],
        aws_secret_access_key=CREDENTIALS["secret_access_key"],
    ).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


def s3_settings(endpoint: str, **overrides: Any) -> VisitsSettings:
    values: dict[str, Any] = {
        "env": "test",
        "evidence_store": "s3",
        "evidence_s3_bucket": BUCKET,
        "evidence_s3_endpoint_url": endpoint,
        "evidence_s3_region": "us-east-1",
        "evidence_s3_access_key_id": CREDENTIALS["access_key_id"],
        "evidence_s3_secret_access_key": CREDENTIALS["secret_access_key"],
    }
    return VisitsSettings(**(values | overrides))


async def test_objects_are_kept_by_hash_checked_on_read_and_deleted(s3_endpoint: str) -> None:
    store = evidence_store_for(s3_settings(s3_endpoint, evidence_s3_prefix="unit/"))
    assert isinstance(store, S3Store)
    data = png(new_id("s3"))
    sha256 = hashlib.sha256(data).hexdigest()
    assert await store.get(sha256) is None
    await store.put(sha256, data)
    await store.put(sha256, data)  # a retried upload: the same object
    assert await store.get(sha256) == data
    listed = store.client.list_objects_v2(Bucket=BUCKET, Prefix="unit/")
    assert [item["Key"] for item in listed.get("Contents", [])] == [f"unit/{sha256}"]

    with pytest.raises(ValueError):
        await store.put(sha256, data + b"x")  # bytes that are not their name
    # Altered at rest (behind the service's back): never served.
    store.client.put_object(Bucket=BUCKET, Key=f"unit/{sha256}", Body=b"tampered")
    with pytest.raises(EvidenceCorrupted):
        await store.get(sha256)

    await store.delete(sha256)
    assert await store.get(sha256) is None
    await store.delete(sha256)  # deleting what is gone is nothing


def test_s3_needs_a_bucket() -> None:
    with pytest.raises(ValueError, match="EVIDENCE_S3_BUCKET"):
        VisitsSettings(env="test", evidence_store="s3")
    assert VisitsSettings(env="test").evidence_store == "local"


async def test_the_api_keeps_and_serves_uploads_in_the_bucket(
    system: System, s3_endpoint: str
) -> None:
    settings = s3_settings(
        s3_endpoint,
        database_url=system.database_url,
        kafka_bootstrap_servers=system.bootstrap,
        evidence_s3_prefix="api/",
    )
    app = visits_main.build_app(settings)
    agent = auth("agent", new_id("AG"))
    data = png(new_id("api"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://v") as api,
    ):
        uploaded = await api.post(
            "/v1/evidence", content=data, headers=agent | {"Content-Type": "image/png"}
        )
        assert uploaded.status_code == 201, uploaded.text
        evidence = uploaded.json()
        assert evidence["sha256"] == hashlib.sha256(data).hexdigest()
        fetched = await api.get(f"/v1/evidence/{evidence['evidence_id']}", headers=agent)
        assert fetched.status_code == 200
        assert fetched.content == data
    store = app.state.evidence_store
    assert isinstance(store, S3Store)
    kept = store.client.get_object(Bucket=BUCKET, Key=f"api/{evidence['sha256']}")
    assert kept["Body"].read() == data
