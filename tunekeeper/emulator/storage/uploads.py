"""Resumable upload sessions: started with the object's metadata, then filled with the bytes in one or more PUTs.

A session is named by an opaque random `upload_id`, as at Google; the session URL is the only credential a
client needs for it. Sessions live until they complete, are cancelled (DELETE) or the emulator is reset.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunekeeper.emulator.storage.checksums import crc32c
from tunekeeper.emulator.storage.errors import StorageError, invalid

if TYPE_CHECKING:
    from tunekeeper.emulator.storage.objects import StoredObject

_CONTENT_RANGE = re.compile(r"^bytes\s+(?:(?P<first>\d+)-(?P<last>\d+)|\*)/(?P<total>\d+|\*)$")


@dataclass(frozen=True, slots=True)
class ContentRange:
    """A PUT's `Content-Range`: `bytes a-b/total`, `bytes a-b/*`, or `bytes */total` (a status query)."""

    first: int | None  # None: no bytes in this request
    last: int | None
    total: int | None  # None: not known yet ("*")


def parse_content_range(header: str | None, body_length: int) -> ContentRange:
    """No header: the body is the whole object."""
    if header is None:
        return ContentRange(0, body_length - 1, body_length) if body_length else ContentRange(None, None, 0)
    match = _CONTENT_RANGE.match(header.strip())
    if match is None:
        raise invalid(f"Invalid Content-Range header: {header!r}; expected 'bytes FIRST-LAST/TOTAL'.")
    total = None if match["total"] == "*" else int(match["total"])
    if match["first"] is None:
        return ContentRange(None, None, total)
    first, last = int(match["first"]), int(match["last"])
    if last < first or last - first + 1 != body_length:
        raise invalid(f"Content-Range {header!r} does not match the request's {body_length} bytes.")
    if total is not None and last >= total:
        raise invalid(f"Content-Range {header!r} ends beyond the object's {total} bytes.")
    return ContentRange(first, last, total)


@dataclass(frozen=True, slots=True)
class ObjectDraft:
    """What an upload will write, known before its bytes are: from the metadata, headers and query."""

    bucket: str
    name: str
    content_type: str
    metadata: dict[str, str]  # custom metadata
    properties: dict[str, str]  # cacheControl, contentDisposition, contentEncoding, contentLanguage
    expected_md5: str | None  # base64, as the client sent it in the metadata
    expected_crc32c: str | None
    declared_size: int | None  # X-Upload-Content-Length (resumable uploads)
    preconditions: dict[str, str]  # ifGenerationMatch & co.


@dataclass(slots=True)
class UploadSession:
    upload_id: str
    draft: ObjectDraft
    received: bytearray = field(default_factory=bytearray)
    crc: int = 0  # CRC32C of `received`, summed chunk by chunk
    completed: StoredObject | None = None

    def append(self, chunk: ContentRange, body: bytes) -> None:
        """Add a chunk at its offset. A chunk that repeats bytes already received (a client retrying) is fine."""
        if chunk.first is None:
            return
        have = len(self.received)
        if chunk.first > have:
            raise StorageError(
                400,
                "invalid",
                f"Content-Range starts at byte {chunk.first} but only {have} bytes have been received.",
            )
        new = body[have - chunk.first :]
        self.received += new
        self.crc = crc32c(new, self.crc)

    def range_header(self) -> dict[str, str]:
        """What a 308 answer says was persisted: no header at all before the first byte."""
        have = len(self.received)
        return {"Range": f"bytes=0-{have - 1}"} if have else {}


class UploadSessions:
    def __init__(self) -> None:
        self._sessions: dict[str, UploadSession] = {}

    def start(self, draft: ObjectDraft) -> UploadSession:
        session = UploadSession(secrets.token_urlsafe(24), draft)
        self._sessions[session.upload_id] = session
        return session

    def get(self, upload_id: str) -> UploadSession:
        session = self._sessions.get(upload_id)
        if session is None:
            raise StorageError(404, "notFound", "No such upload session.")
        return session

    def cancel(self, upload_id: str) -> None:
        self.get(upload_id)
        del self._sessions[upload_id]

    def __len__(self) -> int:
        return len(self._sessions)
