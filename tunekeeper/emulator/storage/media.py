"""An object's bytes as a download answers them: checksum and generation headers, and byte ranges."""

from __future__ import annotations

import re

from aiohttp import web

from tunekeeper.emulator.storage.checksums import crc32c_base64, md5_base64
from tunekeeper.emulator.storage.errors import StorageError
from tunekeeper.emulator.storage.objects import StoredObject
from tunekeeper.emulator.storage.resources import object_etag

_RANGE = re.compile(r"^bytes=(?:(?P<first>\d+)-(?P<last>\d*)|-(?P<suffix>\d+))$")


def media_response(stored: StoredObject, range_header: str | None) -> web.Response:
    """The bytes (200), or the asked part of them (206). `x-goog-hash` lets a client check what it received:
    google-cloud-storage verifies whole downloads against it."""
    headers = {
        "Content-Type": stored.content_type,
        "ETag": object_etag(stored),
        "x-goog-hash": f"crc32c={crc32c_base64(stored.crc32c or 0)},md5={md5_base64(stored.md5)}",
        "x-goog-generation": str(stored.generation),
        "x-goog-metageneration": str(stored.metageneration),
        "x-goog-stored-content-length": str(stored.size),
        "x-goog-stored-content-encoding": stored.properties.get("contentEncoding", "identity"),
        "x-goog-storage-class": "STANDARD",
        "Accept-Ranges": "bytes",
    }
    span = _span(range_header, stored.size)
    if span is None:
        return web.Response(body=stored.data, headers=headers)
    first, last = span
    headers["Content-Range"] = f"bytes {first}-{last}/{stored.size}"
    return web.Response(status=206, body=stored.data[first : last + 1], headers=headers)


def _span(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte span a `Range` header asks for; None for the whole object."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # a Range this server does not understand is ignored, as HTTP allows
    if match["suffix"] is not None:
        length = int(match["suffix"])
        if length == 0:
            raise _unsatisfiable(header, size)
        return (max(size - length, 0), size - 1) if size else None
    first = int(match["first"])
    last = int(match["last"]) if match["last"] else size - 1
    if first >= size or last < first:
        raise _unsatisfiable(header, size)
    return first, min(last, size - 1)


def _unsatisfiable(header: str, size: int) -> StorageError:
    return StorageError(
        416,
        "requestedRangeNotSatisfiable",
        f"Request range not satisfiable: {header!r} for an object of {size} bytes.",
        headers={"Content-Range": f"bytes */{size}"},
    )
