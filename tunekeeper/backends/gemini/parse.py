"""Service JSON to typed values, defensively: anything unexpected raises MalformedResponse, never KeyError.

Proto3 JSON leaves out fields that hold their default (0, "", false), so an absent number means 0 and an
absent string means "". Identity fields (names) and the model state have no usable default: their absence is
malformed. Enums are accepted as names or as numbers (`$alt=json;enum-encoding=int`), 64-bit integers as
numbers or strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tunekeeper.backends.gemini.types import (
    Hyperparameters,
    ModelState,
    Operation,
    OperationError,
    OperationProgress,
    Snapshot,
    TunedModel,
)
from tunekeeper.backends.googleapi.errors import MalformedResponse

_STATE_BY_NUMBER = {1: ModelState.CREATING, 2: ModelState.ACTIVE, 3: ModelState.FAILED}
_OPERATIONS_SEGMENT = "/operations/"


def parse_tuned_model(data: object, where: str = "tunedModel") -> TunedModel:
    obj = _object(data, where)
    task = _optional_object(obj, "tuningTask", where)
    return TunedModel(
        name=_name(obj, where),
        display_name=_string(obj, "displayName", where),
        state=_state(obj.get("state"), f"{where}.state"),
        base_model=_string(obj, "baseModel", where) or None,
        create_time=_timestamp(obj, "createTime", where),
        update_time=_timestamp(obj, "updateTime", where),
        snapshots=_snapshots(task, f"{where}.tuningTask"),
        hyperparameters=_hyperparameters(task, f"{where}.tuningTask"),
        description=_string(obj, "description", where),
    )


def parse_operation(data: object, where: str = "operation") -> Operation:
    obj = _object(data, where)
    name = _name(obj, where)
    metadata = _optional_object(obj, "metadata", where)
    done = _bool(obj, "done", where)
    model = (
        parse_tuned_model(obj["response"], f"{where}.response") if done and obj.get("response") is not None else None
    )
    error = _operation_error(obj, where) if obj.get("error") is not None else None
    tuned_model_name = _string(metadata, "tunedModel", f"{where}.metadata") or (model.name if model else "")
    if not tuned_model_name and _OPERATIONS_SEGMENT in name:
        tuned_model_name = name.split(_OPERATIONS_SEGMENT, 1)[0]
    if not tuned_model_name:
        raise MalformedResponse(f"{where}: cannot tell which tuned model operation {name!r} belongs to")
    progress = OperationProgress(
        total_steps=_int(metadata, "totalSteps", f"{where}.metadata"),
        completed_steps=_int(metadata, "completedSteps", f"{where}.metadata"),
        completed_percent=_float(metadata, "completedPercent", f"{where}.metadata"),
        snapshots=_snapshots(metadata, f"{where}.metadata"),
    )
    return Operation(
        name=name, done=done, progress=progress, tuned_model_name=tuned_model_name, model=model, error=error
    )


def parse_tuned_model_page(data: object) -> tuple[list[TunedModel], str | None]:
    """One page of tunedModels.list and the token of the next page (None on the last)."""
    obj = _object(data, "listTunedModelsResponse")
    items = _list(obj, "tunedModels", "listTunedModelsResponse")
    models = [parse_tuned_model(item, f"tunedModels[{index}]") for index, item in enumerate(items)]
    return models, _string(obj, "nextPageToken", "listTunedModelsResponse") or None


def parse_operation_page(data: object) -> tuple[list[Operation], str | None]:
    """One page of operations.list and the token of the next page (None on the last)."""
    obj = _object(data, "listOperationsResponse")
    items = _list(obj, "operations", "listOperationsResponse")
    operations = [parse_operation(item, f"operations[{index}]") for index, item in enumerate(items)]
    return operations, _string(obj, "nextPageToken", "listOperationsResponse") or None


def parse_generated_text(data: object) -> str:
    """The first candidate's text, joined over its parts; "" when there is none (e.g. a blocked prompt)."""
    obj = _object(data, "generateContentResponse")
    candidates = _list(obj, "candidates", "generateContentResponse")
    if not candidates:
        return ""
    candidate = _object(candidates[0], "candidates[0]")
    content = _optional_object(candidate, "content", "candidates[0]")
    parts = _list(content, "parts", "candidates[0].content")
    return "".join(
        _string(_object(part, f"candidates[0].content.parts[{index}]"), "text", f"candidates[0].content.parts[{index}]")
        for index, part in enumerate(parts)
    )


def parse_empty(data: object, where: str) -> None:
    """Responses that carry nothing (delete, cancel): an object, and not one that carries an error. A 2xx with
    an error body (a proxy's, or a service hiccup) did not delete or cancel anything: taking it as success
    would record a model as gone that remains."""
    obj = _object(data, where)
    if "error" in obj:
        error = obj["error"]
        detail = _short(error.get("status") or error.get("message")) if isinstance(error, dict) else _short(error)
        raise MalformedResponse(f"{where}: a success status with an error in the body ({detail})")


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedResponse(f"{where}: expected a JSON object, got {_kind(value)}")
    return value


def _optional_object(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    return {} if value is None else _object(value, f"{where}.{key}")


def _list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedResponse(f"{where}.{key}: expected a list, got {_kind(value)}")
    return value


def _name(obj: dict[str, Any], where: str) -> str:
    name = _string(obj, "name", where)
    if not name:
        raise MalformedResponse(f"{where}.name: missing")
    return name


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedResponse(f"{where}.{key}: expected a string, got {_kind(value)}")
    return value


def _bool(obj: dict[str, Any], key: str, where: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise MalformedResponse(f"{where}.{key}: expected true or false, got {_kind(value)}")
    return value


def _int(obj: dict[str, Any], key: str, where: str) -> int:
    value = _optional_int(obj, key, where)
    return 0 if value is None else value


def _optional_int(obj: dict[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise MalformedResponse(f"{where}.{key}: expected an integer, got {_kind(value)}")


def _float(obj: dict[str, Any], key: str, where: str) -> float:
    value = _optional_float(obj, key, where)
    return 0.0 if value is None else value


def _optional_float(obj: dict[str, Any], key: str, where: str) -> float | None:
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
    raise MalformedResponse(f"{where}.{key}: expected a number, got {_kind(value)}")


def _timestamp(obj: dict[str, Any], key: str, where: str) -> datetime | None:
    text = _string(obj, key, where)
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedResponse(f"{where}.{key}: not an RFC 3339 timestamp: {text[:40]!r}") from None
    # Google's timestamps are UTC; one without an offset is read as UTC rather than left naive.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _state(value: object, where: str) -> ModelState:
    if isinstance(value, str):
        try:
            return ModelState(value)
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool) and value in _STATE_BY_NUMBER:
        return _STATE_BY_NUMBER[value]
    raise MalformedResponse(f"{where}: expected CREATING, ACTIVE or FAILED (or 1, 2, 3), got {_short(value)}")


def _snapshots(obj: dict[str, Any], where: str) -> tuple[Snapshot, ...]:
    snapshots = []
    for index, item in enumerate(_list(obj, "snapshots", where)):
        at = f"{where}.snapshots[{index}]"
        snapshot = _object(item, at)
        snapshots.append(
            Snapshot(
                step=_int(snapshot, "step", at),
                epoch=_int(snapshot, "epoch", at),
                mean_loss=_float(snapshot, "meanLoss", at),
                compute_time=_timestamp(snapshot, "computeTime", at),
            )
        )
    return tuple(snapshots)


def _hyperparameters(task: dict[str, Any], where: str) -> Hyperparameters:
    at = f"{where}.hyperparameters"
    obj = _optional_object(task, "hyperparameters", where)
    return Hyperparameters(
        epoch_count=_optional_int(obj, "epochCount", at),
        batch_size=_optional_int(obj, "batchSize", at),
        learning_rate=_optional_float(obj, "learningRate", at),
        learning_rate_multiplier=_optional_float(obj, "learningRateMultiplier", at),
    )


def _operation_error(obj: dict[str, Any], where: str) -> OperationError:
    error = _object(obj["error"], f"{where}.error")
    return OperationError(
        code=_int(error, "code", f"{where}.error"), message=_string(error, "message", f"{where}.error")
    )


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
