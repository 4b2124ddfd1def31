"""Evidence bytes in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, Alibaba OSS's
S3 API...): `EVIDENCE_STORE=s3`.

Objects are named `<prefix><sha256>` in one bucket, as the local store names its files:
content-addressed, so a put is idempotent (a retried upload writes the same bytes under
the same name, and a HEAD first spares the transfer), and every read is checked against
the name. boto3's client is synchronous and thread-safe: each call runs in a worker
thread, so the event loop keeps serving while S3 answers. Credentials come the way boto3
finds them (environment, instance profile, `~/.aws`), or from the settings for a
self-hosted store.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from services.visits.evidence_store import EvidenceCorrupted

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_SHA256 = re.compile(r"[0-9a-f]{64}")
# S3's answers for an object that is not there (a HEAD has no body, so only the status).
_ABSENT = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Store:
    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "evidence/",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client: S3Client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                connect_timeout=timeout_seconds,
                read_timeout=timeout_seconds,
                retries={"max_attempts": 3, "mode": "standard"},
                # Path-style: what self-hosted stores answer without wildcard DNS.
                s3={"addressing_style": "path"},
            ),
        )

    def _key(self, sha256: str) -> str:
        if _SHA256.fullmatch(sha256) is None:
            # Only hashes this service computed get here; anything else would be a path.
            raise ValueError("not a SHA-256 hex digest")
        return f"{self.prefix}{sha256}"

    async def put(self, sha256: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, sha256, data)

    async def get(self, sha256: str) -> bytes | None:
        return await asyncio.to_thread(self._get, sha256)

    async def delete(self, sha256: str) -> None:
        # S3 answers a DELETE of an absent key with success.
        await asyncio.to_thread(
            self.client.delete_object, Bucket=self.bucket, Key=self._key(sha256)
        )

    def _put(self, sha256: str, data: bytes) -> None:
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError("the bytes do not hash to the name they are put under")
        key = self._key(sha256)
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return  # the same name is the same bytes: nothing to send
        except ClientError as exc:
            if _code(exc) not in _ABSENT:
                raise
        # The store checks the bytes it receives against their SHA-256, as we do on reads.
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ChecksumAlgorithm="SHA256",
            ContentLength=len(data),
        )

    def _get(self, sha256: str) -> bytes | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(sha256))
        except ClientError as exc:
            if _code(exc) in _ABSENT:
                return None
            raise
        data = answer["Body"].read()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise EvidenceCorrupted(sha256)
        return data


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
