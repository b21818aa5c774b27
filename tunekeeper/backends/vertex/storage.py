"""Cloud Storage objects (JSON API): upload, metadata, delete; where Vertex AI reads training data.

Uploads are single-request media uploads (`uploadType=media`), up to MAX_UPLOAD_BYTES. Tuning datasets are
small (Google recommends 100-500 examples: kilobytes to a few megabytes), so one request is simplest and a
failed one is simply sent again by the retry policy: a repeat writes the same bytes as a new generation, which
is harmless. The resumable protocol, which bigger files (up to the service's 1 GB per dataset) would need, is
not implemented. Integrity: the request carries the data's MD5 (`x-goog-hash`), which the service checks, and
the answer's `md5Hash` (or, for objects without one, `size`) is checked against the data; a mismatch is a
MalformedResponse and retried.
"""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import quote

from tunekeeper.backends.googleapi import read
from tunekeeper.backends.googleapi.errors import MalformedResponse, NotFound
from tunekeeper.backends.googleapi.transport import Transport
from tunekeeper.backends.vertex.parse import parse_object_info
from tunekeeper.backends.vertex.types import ObjectInfo

DEFAULT_STORAGE_URL = "https://storage.googleapis.com"
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
# Bucket names: 3-63 characters (up to 222 with dots), lowercase letters, digits, '-', '_' and '.'.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_MAX_OBJECT_NAME_BYTES = 1024


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """`gs://bucket/name` as (bucket, name); ValueError if it is not a usable object URI."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(f"not a valid bucket name: {bucket!r}")
    if not name or len(name.encode()) > _MAX_OBJECT_NAME_BYTES or "\r" in name or "\n" in name:
        raise ValueError(f"not a valid object name in {uri!r}")
    if name in (".", ".."):
        raise ValueError(f"not a valid object name in {uri!r}")
    return bucket, name


def _object_path(bucket: str, name: str) -> str:
    # The whole name percent-encoded, slashes included: the name is one path segment of the API.
    return f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}"


class CloudStorage:
    """Objects in Cloud Storage, through a transport on the storage URL that carries OAuth tokens."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def upload(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> ObjectInfo:
        """Write `data` as the object `uri` (replacing any object of that name); its metadata as stored."""
        bucket, name = parse_gs_uri(uri)
        if len(data) > MAX_UPLOAD_BYTES:
            raise ValueError(f"{len(data)} bytes: single-request uploads are limited to {MAX_UPLOAD_BYTES}")
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()

        def parse(document: object) -> ObjectInfo:
            info = parse_object_info(document, "storage.objects.insert")
            if info.bucket != bucket or info.name != name:
                raise MalformedResponse(f"the upload answered another object: {info.uri!r}")
            if info.md5_hash and info.md5_hash != md5:
                raise MalformedResponse(f"the stored object's MD5 {info.md5_hash!r} is not the data's {md5!r}")
            if info.size != len(data):
                raise MalformedResponse(f"the stored object has {info.size} bytes, the data {len(data)}")
            return info

        return await self._transport.call(
            "POST",
            "storage.objects.insert",
            f"/upload/storage/v1/b/{bucket}/o",
            parse,
            params={"uploadType": "media", "name": name},
            data=data,
            headers={"Content-Type": content_type, "x-goog-hash": f"md5={md5}"},
        )

    async def stat(self, uri: str) -> ObjectInfo | None:
        """The object's metadata, or None when there is no such object (or no such bucket: both are 404)."""
        bucket, name = parse_gs_uri(uri)
        try:
            return await self._transport.call(
                "GET", "storage.objects.get", _object_path(bucket, name), parse_object_info
            )
        except NotFound:
            return None

    async def delete(self, uri: str) -> None:
        """Delete the object. NotFound when there is none: whether "already gone" is fine is the caller's call
        (a retry after a lost answer meets NotFound for an object it did delete)."""
        bucket, name = parse_gs_uri(uri)
        await self._transport.call("DELETE", "storage.objects.delete", _object_path(bucket, name), _parse_deleted)


def _parse_deleted(document: object) -> None:
    read.empty(document, "storage.objects.delete")
