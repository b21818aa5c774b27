"""Deterministic tuned-model ids, so that a retried create meets ALREADY_EXISTS instead of making a second model."""

from __future__ import annotations

import re
import unicodedata

MAX_TUNED_MODEL_ID_CHARS = 40
PREFIX_PATTERN = r"([a-z][a-z0-9-]{0,19})?"

_PREFIX_RE = re.compile(PREFIX_PATTERN)
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(text: str) -> str:
    """Lowercase ASCII letters and digits joined by single '-'; accents dropped ("Café" -> "cafe")."""
    # NFKD splits accented letters into base letter + combining mark; dropping non-ASCII then keeps the base.
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return _NOT_SLUG.sub("-", ascii_text).strip("-")


def tuned_model_id(display_name: str, job_id: int, prefix: str = "") -> str:
    """`prefix` + slug of the display name + `-{job_id}`, at most 40 characters, valid for the service.

    The id always ends with `-{job_id}` and the slug never ends with '-', so the text after the last '-' is
    the job id: distinct jobs get distinct ids whatever their names.
    """
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
        raise ValueError(f"job_id must be a positive integer, got {job_id!r}")
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"prefix {prefix!r} must match {PREFIX_PATTERN}")
    suffix = f"-{job_id}"
    slug = _slug(display_name)
    # The id must start with a letter; the prefix, when given, does, but "tk-" + "" would still read badly.
    if not slug:
        slug = "job"
    elif not slug[0].isalpha():
        slug = f"job-{slug}"
    room = MAX_TUNED_MODEL_ID_CHARS - len(prefix) - len(suffix)
    if room < 1:
        raise ValueError(f"job_id {job_id} is too long for a {MAX_TUNED_MODEL_ID_CHARS}-character id")
    return prefix + slug[:room].rstrip("-") + suffix
