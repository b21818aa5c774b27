"""Reading request bodies field by field, as Google's JSON transcoding does: unknown names rejected, proto
types checked, and errors naming the field in snake_case (`tuned_model.tuning_task.hyperparameters`).

Shared by the surfaces' create checks (gemini/validation.py, vertex/validation.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from tunekeeper.emulator.errors import ApiError, invalid_argument
from tunekeeper.emulator.jsonbody import camel_to_snake

# A field tree: None marks a leaf, a nested mapping a message, a one-item list a repeated message.
Schema = Mapping[str, Any]


def snake_path(path: str) -> str:
    return ".".join(camel_to_snake(part) for part in path.split("."))


def check_fields(value: Any, schema: Schema, path: str) -> None:
    """Reject unknown field names and non-objects where an object is expected."""
    if not isinstance(value, dict):
        raise invalid_argument(
            f"Invalid value at '{snake_path(path)}': expected an object, got {json_kind(value)}.",
            snake_path(path),
        )
    for key, item in value.items():
        if key not in schema:
            raise invalid_argument(
                f'Invalid JSON payload received. Unknown name "{camel_to_snake(key)}" at '
                f"'{snake_path(path)}': Cannot find field.",
                snake_path(path),
            )
        child = schema[key]
        child_path = f"{path}.{key}"
        if isinstance(child, Mapping):
            check_fields(item, child, child_path)
        elif isinstance(child, list):
            if not isinstance(item, list):
                raise invalid_argument(
                    f"Invalid value at '{snake_path(child_path)}': expected a list.", snake_path(child_path)
                )
            for index, element in enumerate(item):
                check_fields(element, child[0], f"{child_path}[{index}]")


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _type_error(path: str, proto_type: str, value: Any) -> ApiError:
    return invalid_argument(f"Invalid value at '{snake_path(path)}' ({proto_type}), {value!r}", snake_path(path))


def get_string(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _type_error(f"{path}.{key}", "TYPE_STRING", value)
    return value


def get_int(obj: Mapping[str, Any], key: str, path: str, proto_type: str = "TYPE_INT32") -> int | None:
    # Proto JSON takes integers as numbers or decimal strings (int64 fields are written as strings).
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise _type_error(f"{path}.{key}", proto_type, value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    raise _type_error(f"{path}.{key}", proto_type, value)


def get_float(obj: Mapping[str, Any], key: str, path: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise _type_error(f"{path}.{key}", "TYPE_FLOAT", value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise _type_error(f"{path}.{key}", "TYPE_FLOAT", value) from None
        if math.isfinite(number):
            return number
    raise _type_error(f"{path}.{key}", "TYPE_FLOAT", value)
