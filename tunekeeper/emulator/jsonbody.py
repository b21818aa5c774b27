"""Request bodies as the service reads them: JSON that may carry trailing commas, snake_case or camelCase keys.

The tutorial's own curl bodies end objects with `,}`, and the service accepts them; Python's json module does
not, so such commas are removed first by a small tokenizer that knows where strings begin and end.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from tunekeeper.emulator.errors import ApiError

_WHITESPACE = frozenset(" \t\r\n")


def strip_trailing_commas(text: str) -> str:
    """Drop each comma that directly precedes `}` or `]` (whitespace between allowed), outside strings.

    A comma right after `{`, `[` or another comma is left alone, so `{,}` and `[1,,]` stay invalid.
    """
    drop: list[int] = []
    in_string = False
    escaped = False
    pending_comma = -1  # index of a comma whose fate depends on the next significant character
    previous = ""  # last significant character outside strings
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char in _WHITESPACE:
            continue
        if pending_comma >= 0:
            if char in "}]":
                drop.append(pending_comma)
            pending_comma = -1
        if char == '"':
            in_string = True
        elif char == "," and previous not in {"", "{", "[", ","}:
            pending_comma = index
        previous = char
    if not drop:
        return text
    pieces: list[str] = []
    start = 0
    for index in drop:
        pieces.append(text[start:index])
        start = index + 1
    pieces.append(text[start:])
    return "".join(pieces)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_lenient(raw: bytes) -> Any:
    """JSON text (trailing commas allowed) to a value; errors as 400 INVALID_ARGUMENT like the service."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("INVALID_ARGUMENT", "Invalid JSON payload received. Invalid UTF-8 in body.") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError):
        pass
    try:
        return json.loads(strip_trailing_commas(text), parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        message = f"Invalid JSON payload received. {exc.msg} at line {exc.lineno} column {exc.colno}."
        raise ApiError("INVALID_ARGUMENT", message) from None
    except ValueError as exc:
        raise ApiError("INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}.") from None


@lru_cache(maxsize=1024)
def snake_to_camel(name: str) -> str:
    """`text_input` -> `textInput`; camelCase and `@type` pass through unchanged."""
    if "_" not in name or name.startswith("@"):
        return name
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@lru_cache(maxsize=1024)
def camel_to_snake(name: str) -> str:
    """`textInput` -> `text_input`, for field paths in error messages (the service names fields that way)."""
    return "".join("_" + char.lower() if char.isupper() else char for char in name)


def camelize_keys(value: Any, path: str = "") -> Any:
    """Every object key at every level in camelCase. Two spellings of one field is an error, as in the service."""
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            camel = snake_to_camel(key)
            child_path = f"{path}.{camel_to_snake(camel)}" if path else camel_to_snake(camel)
            if camel in result:
                raise ApiError(
                    "INVALID_ARGUMENT",
                    f"Invalid JSON payload received. Duplicate field \"{camel}\" at '{child_path}'.",
                )
            result[camel] = camelize_keys(item, child_path)
        return result
    if isinstance(value, list):
        return [camelize_keys(item, f"{path}[{index}]") for index, item in enumerate(value)]
    return value


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body as a camelCase dict. An empty body counts as `{}`."""
    if not raw.strip():
        return {}
    value = parse_lenient(raw)
    if not isinstance(value, dict):
        raise ApiError("INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object at the top level.")
    result: dict[str, Any] = camelize_keys(value)
    return result
