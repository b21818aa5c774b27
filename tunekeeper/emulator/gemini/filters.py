"""Filters of the tunedModels lists.

List filter syntax (tunedModels.list), terms separated by spaces, all must hold (AND), case-insensitive:
- `word` or `"two words"`: a substring of the display name or the description;
- `displayName:word` / `display_name:word`, `description:word`: a substring of that field;
- `owner:me`, `writers:me`, `readers:me`: accepted, true for every model (all belong to the caller);
- `readers:everyone`: false for every model (the emulator has no shared models).

Operation list filter (tunedModels.operations.list): empty, `done=true` or `done=false`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

from tunekeeper.emulator.errors import invalid_argument
from tunekeeper.emulator.gemini.models import TunedModel


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
