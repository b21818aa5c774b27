"""Reading Google's JSON answers defensively, for any service: anything unexpected raises MalformedResponse
(which is retried like a 503), never a KeyError or a TypeError.

Proto3 JSON leaves out fields that hold their default (0, "", false), so an absent number reads as 0 (or None
where absence matters) and an absent string as "". `where` names the place in the answer, for the message.
Callers use the module as a namespace: `read.string(obj, "name", where)`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tunekeeper.backends.googleapi.errors import MalformedResponse


def mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedResponse(f"{where}: expected a JSON object, got {kind(value)}")
    return value


def optional_mapping(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    return {} if value is None else mapping(value, f"{where}.{key}")


def items(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedResponse(f"{where}.{key}: expected a list, got {kind(value)}")
    return value


def name(obj: dict[str, Any], where: str) -> str:
    """The resource's name, which has no usable default: its absence is malformed."""
    value = string(obj, "name", where)
    if not value:
        raise MalformedResponse(f"{where}.name: missing")
    return value


def string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedResponse(f"{where}.{key}: expected a string, got {kind(value)}")
    return value


def boolean(obj: dict[str, Any], key: str, where: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise MalformedResponse(f"{where}.{key}: expected true or false, got {kind(value)}")
    return value


def integer(obj: dict[str, Any], key: str, where: str) -> int:
    value = optional_int(obj, key, where)
    return 0 if value is None else value


def optional_int(obj: dict[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise MalformedResponse(f"{where}.{key}: expected an integer, got {kind(value)}")


def number(obj: dict[str, Any], key: str, where: str) -> float:
    value = optional_number(obj, key, where)
    return 0.0 if value is None else value


def optional_number(obj: dict[str, Any], key: str, where: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # proto JSON writes "NaN" and "Infinity" as strings
        try:
            return float(value)
        except ValueError:
            pass
    raise MalformedResponse(f"{where}.{key}: expected a number, got {kind(value)}")


def timestamp(obj: dict[str, Any], key: str, where: str) -> datetime | None:
    text = string(obj, key, where)
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedResponse(f"{where}.{key}: not an RFC 3339 timestamp: {text[:40]!r}") from None
    # Google's timestamps are UTC; one without an offset is read as UTC rather than left naive.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def empty(data: object, where: str) -> None:
    """Responses that carry nothing (delete, cancel): an object, and not one that carries an error. A 2xx with
    an error body (a proxy's, or a service hiccup) did not delete or cancel anything: taking it as success
    would record a model as gone that remains."""
    obj = mapping(data, where)
    if "error" in obj:
        error = obj["error"]
        detail = short(error.get("status") or error.get("message")) if isinstance(error, dict) else short(error)
        raise MalformedResponse(f"{where}: a success status with an error in the body ({detail})")
