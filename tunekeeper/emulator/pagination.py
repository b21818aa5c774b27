"""List pages and filters.

A page token names the creation sequence number of the last item served plus a fingerprint of the other list
parameters, so a page token is only accepted with the parameters that produced it, and a listing is stable
while models are created or deleted between pages: nothing is served twice, nothing present throughout is
skipped.

List filter syntax (tunedModels.list), terms separated by spaces, all must hold (AND), case-insensitive:
- `word` or `"two words"`: a substring of the display name or the description;
- `displayName:word` / `display_name:word`, `description:word`: a substring of that field;
- `owner:me`, `writers:me`, `readers:me`: accepted, true for every model (all belong to the caller);
- `readers:everyone`: false for every model (the emulator has no shared models).

Operation list filter (tunedModels.operations.list): empty, `done=true` or `done=false`.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tunekeeper.emulator.errors import invalid_argument
from tunekeeper.emulator.models import TunedModel

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


@dataclass(frozen=True, slots=True)
class Page:
    models: list[TunedModel]
    next_token: str | None


def paginate(
    models: Sequence[TunedModel],
    keep: Callable[[TunedModel], bool],
    size: int,
    token: str | None,
    parts: Sequence[str],
) -> Page:
    """One page of `models` (in creation order) that pass `keep`, after the token's position."""
    after = decode_token(token, parts)
    page: list[TunedModel] = []
    more = False
    for model in models:
        if model.seq <= after or not keep(model):
            continue
        if len(page) == size:
            more = True
            break
        page.append(model)
    next_token = encode_token(page[-1].seq, parts) if more and page else None
    return Page(page, next_token)


def model_filter(text: str | None) -> Callable[[TunedModel], bool]:
    """A predicate for tunedModels.list's `filter` (syntax in the module docstring)."""
    if not text or not text.strip():
        return lambda model: True
    try:
        terms = shlex.split(text)
    except ValueError as exc:
        raise invalid_argument(f"Invalid filter {text!r}: {exc}.", "filter") from None
    checks: list[Callable[[TunedModel], bool]] = []
    for term in terms:
        field, colon, value = term.partition(":")
        key = field.lower().replace("_", "")
        if not colon:
            checks.append(_contains(term, display_name=True, description=True))
        elif key == "displayname":
            checks.append(_contains(value, display_name=True, description=False))
        elif key == "description":
            checks.append(_contains(value, display_name=False, description=True))
        elif key in {"owner", "writers", "readers"} and value.lower() == "me":
            continue
        elif key == "readers" and value.lower() == "everyone":
            checks.append(lambda model: False)
        else:
            raise invalid_argument(
                f"Invalid filter term {term!r}: supported are words, displayName:, description:, "
                "owner:me, writers:me, readers:me and readers:everyone.",
                "filter",
            )
    return lambda model: all(check(model) for check in checks)


def _contains(word: str, *, display_name: bool, description: bool) -> Callable[[TunedModel], bool]:
    needle = word.lower()

    def check(model: TunedModel) -> bool:
        return (display_name and needle in model.display_name.lower()) or (
            description and needle in model.description.lower()
        )

    return check


def operation_filter(text: str | None) -> Callable[[TunedModel], bool]:
    """A predicate on a model's create operation for tunedModels.operations.list's `filter`."""
    normalized = (text or "").replace(" ", "").lower()
    if normalized == "":
        return lambda model: True
    if normalized in {"done=true", "done:true"}:
        return lambda model: model.done_at is not None
    if normalized in {"done=false", "done:false"}:
        return lambda model: model.done_at is None
    raise invalid_argument(f"Invalid filter {text!r}: supported are done=true and done=false.", "filter")
