"""Generation preconditions: `ifGenerationMatch` (0: the object must not exist), `ifGenerationNotMatch`,
`ifMetagenerationMatch`, `ifMetagenerationNotMatch`. A failed one is 412 conditionNotMet; on a read, a failed
"not match" is 304 Not Modified, as at Google.
"""

from __future__ import annotations

from collections.abc import Mapping

from tunekeeper.emulator.storage.errors import StorageError, condition_not_met, invalid
from tunekeeper.emulator.storage.objects import StoredObject

PRECONDITION_PARAMETERS = (
    "ifGenerationMatch",
    "ifGenerationNotMatch",
    "ifMetagenerationMatch",
    "ifMetagenerationNotMatch",
    "ifMetaGenerationNotMatch",  # google-cloud-storage's spelling on uploads
)


def preconditions_of(query: Mapping[str, str]) -> dict[str, str]:
    return {key: query[key] for key in PRECONDITION_PARAMETERS if key in query}


def _number(query: Mapping[str, str], key: str) -> int | None:
    raw = query.get(key)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise invalid(f"Invalid value for {key}: {raw!r} is not an integer.") from None


def check_preconditions(query: Mapping[str, str], existing: StoredObject | None, *, read: bool = False) -> None:
    generation = existing.generation if existing is not None else None
    metageneration = existing.metageneration if existing is not None else None

    match = _number(query, "ifGenerationMatch")
    if match is not None and generation != (match or None):
        raise condition_not_met("If-Match")
    meta_match = _number(query, "ifMetagenerationMatch")
    if meta_match is not None and metageneration != meta_match:
        raise condition_not_met("If-Metageneration-Match")

    not_match = _number(query, "ifGenerationNotMatch")
    if not_match is not None and (generation is None or generation == not_match):
        if read and generation is not None:
            raise not_modified()
        raise condition_not_met("If-None-Match")
    meta_not_match = _number(query, "ifMetagenerationNotMatch")
    if meta_not_match is None:
        meta_not_match = _number(query, "ifMetaGenerationNotMatch")
    if meta_not_match is not None and (metageneration is None or metageneration == meta_not_match):
        if read and metageneration is not None:
            raise not_modified()
        raise condition_not_met("If-Metageneration-Not-Match")


class NotModified(StorageError):
    """A read's "not match" precondition failed: the handler answers 304 with no body."""

    def __init__(self) -> None:
        super().__init__(304, "notModified", "Not Modified")


def not_modified() -> NotModified:
    return NotModified()
