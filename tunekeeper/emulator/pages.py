"""List pages, shared by every surface.

A page token names the creation sequence number of the last item served plus a fingerprint of the other list
parameters, so a page token is only accepted with the parameters that produced it, and a listing is stable
while items are created or deleted between pages: nothing is served twice, nothing present throughout is
skipped.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from tunekeeper.emulator.errors import invalid_argument

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000


def page_size(raw: str | None) -> int:
    """pageSize: default 10 when absent or 0, larger than 1000 is clamped to 1000, negative is an error."""
    if raw is None or raw == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError:
        raise invalid_argument(f"Invalid value for page_size: {raw!r} is not an integer.", "page_size") from None
    if size < 0:
        raise invalid_argument(f"page_size must not be negative, got {size}.", "page_size")
    if size == 0:
        return DEFAULT_PAGE_SIZE
    return min(size, MAX_PAGE_SIZE)


def _fingerprint(parts: Sequence[str]) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def encode_token(last_seq: int, parts: Sequence[str]) -> str:
    raw = f"{last_seq}:{_fingerprint(parts)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str | None, parts: Sequence[str]) -> int:
    """The sequence number after which the page starts (0 for the first page)."""
    if not token:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        seq_text, _, fingerprint = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        last_seq = int(seq_text)
    except ValueError:
        raise invalid_argument("Invalid page_token.", "page_token") from None
    if fingerprint != _fingerprint(parts):
        raise invalid_argument(
            "Invalid page_token: the other list parameters must match the call that returned the token.",
            "page_token",
        )
    return last_seq


class Sequenced(Protocol):
    @property
    def seq(self) -> int:
        """Creation order: lists are ordered by it."""
        ...


Item = TypeVar("Item", bound=Sequenced)


@dataclass(frozen=True, slots=True)
class Page(Generic[Item]):
    items: list[Item]
    next_token: str | None


def paginate(
    items: Sequence[Item],
    keep: Callable[[Item], bool],
    size: int,
    token: str | None,
    parts: Sequence[str],
) -> Page[Item]:
    """One page of `items` (in creation order) that pass `keep`, after the token's position."""
    after = decode_token(token, parts)
    page: list[Item] = []
    more = False
    for item in items:
        if item.seq <= after or not keep(item):
            continue
        if len(page) == size:
            more = True
            break
        page.append(item)
    next_token = encode_token(page[-1].seq, parts) if more and page else None
    return Page(page, next_token)
