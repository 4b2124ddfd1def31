"""Where evidence bytes live: behind `EvidenceStore`, addressed by their SHA-256.

Content addressing makes a put idempotent and safe to repeat (a retried upload writes the
same object under the same name), lets two agents' identical files share one object, and
lets every read check the bytes against the name they were stored under. The database
holds the metadata (`visits.evidence`); a store holds only bytes.

`LocalDirectoryStore` is the default (a directory on the API's disk, `EVIDENCE_DIR`). With
several API replicas the directory must be shared (a volume), or an object store must
implement the same three methods (put: a PUT of the object named by its hash; get: a GET;
delete: a DELETE, for evidence never attached to a visit, services/visits/retention.py);
nothing else in the service knows where the bytes are.

An object may be shared by several uploads (the same bytes, two agents): it is deleted
only when no evidence row names it, under an exclusive advisory lock on its hash
(`repository.lock_objects`), which each upload holds shared from its put to its row's
commit, so an upload of the same bytes cannot lose its object to a cleanup in between.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

_SHA256 = re.compile(r"[0-9a-f]{64}")


class EvidenceCorrupted(Exception):
    """The stored bytes no longer hash to their name: altered or damaged at rest."""


class EvidenceStore(Protocol):
    async def put(self, sha256: str, data: bytes) -> None:
        """Keep `data` under `sha256` (its hash); a second put of the same is a no-op."""
        ...

    async def get(self, sha256: str) -> bytes | None:
        """The bytes kept under `sha256`, or None; EvidenceCorrupted if they do not hash
        to it."""
        ...

    async def delete(self, sha256: str) -> None:
        """Drop the object kept under `sha256`; nothing if there is none."""
        ...


class LocalDirectoryStore:
    """Objects as files `<root>/<ab>/<sha256>`, written to a temporary file, flushed to disk
    and renamed into place, so a crash leaves either the whole object or none of it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, sha256: str) -> Path:
        if _SHA256.fullmatch(sha256) is None:
            # Only hashes this service computed get here; anything else would be a path.
            raise ValueError("not a SHA-256 hex digest")
        return self.root / sha256[:2] / sha256

    async def put(self, sha256: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, sha256, data)

    async def get(self, sha256: str) -> bytes | None:
        return await asyncio.to_thread(self._get, sha256)

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(self._path(sha256).unlink, missing_ok=True)

    def _put(self, sha256: str, data: bytes) -> None:
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError("the bytes do not hash to the name they are put under")
        path = self._path(sha256)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _get(self, sha256: str) -> bytes | None:
        try:
            data = self._path(sha256).read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise EvidenceCorrupted(sha256)
        return data
