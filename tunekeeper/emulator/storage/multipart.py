"""`multipart/related` request bodies (RFC 2046), as Cloud Storage's multipart upload takes them.

Two parts: the object's JSON metadata, then its bytes. The body is already in memory, so a small parser that
splits on the boundary is enough; it keeps the bytes of each part exactly (binary data may hold anything).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from itertools import pairwise

from tunekeeper.emulator.storage.errors import invalid


@dataclass(frozen=True, slots=True)
class Part:
    headers: dict[str, str]  # names in lower case
    body: bytes


def boundary_of(content_type: str) -> str:
    """The `boundary` parameter of a `multipart/related` Content-Type (quoted or not)."""
    message = Message()
    message["Content-Type"] = content_type
    if message.get_content_type() != "multipart/related":
        raise invalid(f"Multipart upload requires Content-Type multipart/related, got {content_type!r}.")
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise invalid("Multipart upload requires a boundary in its Content-Type.")
    return boundary


def parse_multipart(body: bytes, boundary: str) -> list[Part]:
    delimiter = b"--" + boundary.encode("latin-1")
    # Each delimiter starts a line: at the very start of the body or after a line break (which belongs to it).
    pattern = re.compile(rb"(?:^|\r?\n)" + re.escape(delimiter) + rb"(--)?[ \t]*(?:\r?\n|$)")
    parts: list[Part] = []
    matches = list(pattern.finditer(body))
    if not matches or matches[-1].group(1) is None:
        raise invalid("Malformed multipart body: no closing boundary.")
    for current, following in pairwise(matches):
        if current.group(1) is not None:  # the closing delimiter; anything after it is an epilogue
            break
        parts.append(_part(body[current.end() : following.start()]))
    return parts


def _part(raw: bytes) -> Part:
    if raw.startswith(b"\r\n") or raw.startswith(b"\n"):  # no headers at all
        head, content = b"", raw[2:] if raw.startswith(b"\r\n") else raw[1:]
    else:
        split = re.search(rb"\r?\n\r?\n", raw)
        if split is None:
            raise invalid("Malformed multipart body: a part has no blank line after its headers.")
        head, content = raw[: split.start()], raw[split.end() :]
    headers: dict[str, str] = {}
    for line in re.split(rb"\r?\n", head):
        if not line.strip():
            continue
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise invalid(f"Malformed multipart body: bad part header {line[:80]!r}.")
        headers[name.strip().lower()] = value.strip()
    return Part(headers, content)
