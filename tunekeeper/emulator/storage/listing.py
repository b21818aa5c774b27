"""`objects.list`: names in lexicographic order, `prefix`, `delimiter` (names rolled up into `prefixes`),
`startOffset`/`endOffset`, and pages of `maxResults` entries (items and prefixes together, as Google counts).

A page token names the last entry served (an object's name, or a prefix) plus a fingerprint of the other list
parameters. Names sort, so the next page starts after that name: stable while objects come and go, nothing
served twice, nothing present throughout skipped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from tunekeeper.emulator.storage.errors import invalid
from tunekeeper.emulator.storage.objects import StoredObject

DEFAULT_MAX_RESULTS = 1000
MAX_MAX_RESULTS = 1000


@dataclass(frozen=True, slots=True)
class Listing:
    items: list[StoredObject]
    prefixes: list[str]
    next_token: str | None


def max_results(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_MAX_RESULTS
    try:
        size = int(raw)
    except ValueError:
        raise invalid(f"Invalid value for maxResults: {raw!r} is not an integer.") from None
    if size < 0:
        raise invalid(f"Invalid value for maxResults: {size} is negative.")
    return min(size, MAX_MAX_RESULTS) if size else DEFAULT_MAX_RESULTS


def _fingerprint(query: Mapping[str, str]) -> str:
    parts = [query.get(key, "") for key in ("prefix", "delimiter", "startOffset", "endOffset")]
    parts.append(query.get("includeTrailingDelimiter", "").lower())
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Position:
    """The last entry a page served: an object's name, or a prefix (then every name under it was served too)."""

    last: str
    is_prefix: bool

    def passed(self, name: str) -> bool:
        return name <= self.last or (self.is_prefix and name.startswith(self.last))


def _encode_token(position: Position, query: Mapping[str, str]) -> str:
    kind = "p" if position.is_prefix else "o"
    raw = f"{_fingerprint(query)}:{kind}:{position.last}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, query: Mapping[str, str]) -> Position:
    try:
        padded = token + "=" * (-len(token) % 4)
        fingerprint, _, rest = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid("Invalid pageToken.") from None
    kind, colon, last = rest.partition(":")
    if not colon or kind not in {"p", "o"}:
        raise invalid("Invalid pageToken.")
    if fingerprint != _fingerprint(query):
        raise invalid("Invalid pageToken: the other list parameters must match the call that returned it.")
    return Position(last, kind == "p")


def list_objects(objects: list[StoredObject], query: Mapping[str, str]) -> Listing:
    """One page of `objects` (sorted by name, already filtered by prefix) per the list parameters in `query`."""
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    start = query.get("startOffset", "")
    end = query.get("endOffset", "")
    trailing = query.get("includeTrailingDelimiter", "").lower() == "true"
    size = max_results(query.get("maxResults"))
    token = query.get("pageToken")
    after = _decode_token(token, query) if token else None

    items: list[StoredObject] = []
    prefixes: list[str] = []
    last_entry: Position | None = None
    more = False
    for stored in objects:
        name = stored.name
        if name < start or (end and name >= end):
            continue
        if after is not None and after.passed(name):
            continue
        rolled: str | None = None
        if delimiter:
            cut = name.find(delimiter, len(prefix))
            if cut >= 0:
                rolled = name[: cut + len(delimiter)]
        if rolled is not None:
            if last_entry is not None and last_entry.is_prefix and rolled == last_entry.last:
                continue  # one entry per prefix
            if len(items) + len(prefixes) == size:
                more = True
                break
            prefixes.append(rolled)
            last_entry = Position(rolled, True)
            if trailing and name == rolled:
                items.append(stored)
            continue
        if len(items) + len(prefixes) == size:
            more = True
            break
        items.append(stored)
        last_entry = Position(name, False)
    next_token = _encode_token(last_entry, query) if more and last_entry is not None else None
    return Listing(items, prefixes, next_token)
