"""Buckets and the objects in them, in memory. The Vertex AI surface reads training data from here.

Buckets are declared when the emulator starts (`--bucket NAME`): a client cannot create one, so a typo in a
staging path fails with 404 as it would at Google. Each write of an object gets a new generation number; only
the live generation is kept (buckets are not versioned).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tunekeeper.emulator.errors import ApiError
from tunekeeper.emulator.storage.checksums import crc32c, md5
from tunekeeper.emulator.storage.uploads import UploadSessions


@dataclass(slots=True)
class StoredObject:
    bucket: str
    name: str
    data: bytes
    content_type: str
    generation: int
    created_at: float
    metadata: dict[str, str] = field(default_factory=dict)  # the object's custom metadata
    md5: bytes = b""
    crc32c: int | None = None
    # The other writable fields a client may set on upload: cacheControl, contentDisposition, contentEncoding,
    # contentLanguage (camelCase, as in the resource).
    properties: dict[str, str] = field(default_factory=dict)
    metageneration: int = 1

    def __post_init__(self) -> None:
        if not self.md5:
            self.md5 = md5(self.data)
        if self.crc32c is None:
            self.crc32c = crc32c(self.data, 0)

    @property
    def size(self) -> int:
        return len(self.data)


class ObjectStore:
    def __init__(self, buckets: frozenset[str]) -> None:
        self.buckets = buckets
        self.created_at = time.time()  # the buckets' creation time: the emulator's start
        self.reset()

    def reset(self) -> None:
        self._objects: dict[str, dict[str, StoredObject]] = {bucket: {} for bucket in self.buckets}
        self.uploads = UploadSessions()  # resumable uploads in progress
        self._generation = 1_700_000_000_000_000  # generations look like Google's: microseconds since the epoch

    def _bucket(self, bucket: str) -> dict[str, StoredObject]:
        objects = self._objects.get(bucket)
        if objects is None:
            raise ApiError("NOT_FOUND", "The specified bucket does not exist.")
        return objects

    def check_bucket(self, bucket: str) -> None:
        self._bucket(bucket)

    def put(
        self,
        bucket: str,
        name: str,
        data: bytes,
        now: float,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        *,
        properties: Mapping[str, str] | None = None,
        data_crc32c: int | None = None,  # already computed (a resumable upload sums its chunks as they come)
    ) -> StoredObject:
        objects = self._bucket(bucket)
        self._generation = max(self._generation + 1, int(now * 1_000_000))
        stored = StoredObject(
            bucket,
            name,
            data,
            content_type,
            self._generation,
            now,
            dict(metadata or {}),
            crc32c=data_crc32c,
            properties=dict(properties or {}),
        )
        objects[name] = stored
        return stored

    def find(self, bucket: str, name: str) -> StoredObject | None:
        """The object, or None if the bucket has none of that name (NOT_FOUND if the bucket does not exist)."""
        return self._bucket(bucket).get(name)

    def get(self, bucket: str, name: str) -> StoredObject:
        stored = self._bucket(bucket).get(name)
        if stored is None:
            raise ApiError("NOT_FOUND", f"No such object: {bucket}/{name}")
        return stored

    def delete(self, bucket: str, name: str) -> None:
        objects = self._bucket(bucket)
        if objects.pop(name, None) is None:
            raise ApiError("NOT_FOUND", f"No such object: {bucket}/{name}")

    def list(self, bucket: str, prefix: str = "") -> list[StoredObject]:
        """Objects whose name starts with `prefix`, in lexicographic order of their names (as Google lists)."""
        objects = self._bucket(bucket)
        return [objects[name] for name in sorted(objects) if name.startswith(prefix)]

    def read_uri(self, uri: str) -> StoredObject:
        """The object a `gs://bucket/name` URI names (INVALID_ARGUMENT if it is not such a URI)."""
        bucket, name = parse_gs_uri(uri)
        return self.get(bucket, name)

    def summary(self) -> dict[str, Any]:
        """Per bucket: object count and bytes (for `/emulator/stats`)."""
        return {
            bucket: {"objects": len(objects), "bytes": sum(stored.size for stored in objects.values())}
            for bucket, objects in self._objects.items()
        }


def parse_gs_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://"):
        raise ApiError("INVALID_ARGUMENT", f"{uri!r} is not a Cloud Storage URI (gs://bucket/object).")
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    if not bucket or not name:
        raise ApiError("INVALID_ARGUMENT", f"{uri!r} does not name an object (gs://bucket/object).")
    return bucket, name
