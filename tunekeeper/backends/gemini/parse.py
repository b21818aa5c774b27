"""Service JSON to typed values, defensively: anything unexpected raises MalformedResponse, never KeyError.

Proto3 JSON leaves out fields that hold their default (0, "", false), so an absent number means 0 and an
absent string means "". Identity fields (names) and the model state have no usable default: their absence is
malformed. Enums are accepted as names or as numbers (`$alt=json;enum-encoding=int`), 64-bit integers as
numbers or strings.
"""

from __future__ import annotations

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
from tunekeeper.backends.googleapi import read
from tunekeeper.backends.googleapi.errors import MalformedResponse

_STATE_BY_NUMBER = {1: ModelState.CREATING, 2: ModelState.ACTIVE, 3: ModelState.FAILED}
_OPERATIONS_SEGMENT = "/operations/"


def parse_tuned_model(data: object, where: str = "tunedModel") -> TunedModel:
    obj = read.mapping(data, where)
    task = read.optional_mapping(obj, "tuningTask", where)
    return TunedModel(
        name=read.name(obj, where),
        display_name=read.string(obj, "displayName", where),
        state=_state(obj.get("state"), f"{where}.state"),
        base_model=read.string(obj, "baseModel", where) or None,
        create_time=read.timestamp(obj, "createTime", where),
        update_time=read.timestamp(obj, "updateTime", where),
        snapshots=_snapshots(task, f"{where}.tuningTask"),
        hyperparameters=_hyperparameters(task, f"{where}.tuningTask"),
        description=read.string(obj, "description", where),
    )


def parse_operation(data: object, where: str = "operation") -> Operation:
    obj = read.mapping(data, where)
    name = read.name(obj, where)
    metadata = read.optional_mapping(obj, "metadata", where)
    done = read.boolean(obj, "done", where)
    model = (
        parse_tuned_model(obj["response"], f"{where}.response") if done and obj.get("response") is not None else None
    )
    error = _operation_error(obj, where) if obj.get("error") is not None else None
    tuned_model_name = read.string(metadata, "tunedModel", f"{where}.metadata") or (model.name if model else "")
    if not tuned_model_name and _OPERATIONS_SEGMENT in name:
        tuned_model_name = name.split(_OPERATIONS_SEGMENT, 1)[0]
    if not tuned_model_name:
        raise MalformedResponse(f"{where}: cannot tell which tuned model operation {name!r} belongs to")
    progress = OperationProgress(
        total_steps=read.integer(metadata, "totalSteps", f"{where}.metadata"),
        completed_steps=read.integer(metadata, "completedSteps", f"{where}.metadata"),
        completed_percent=read.number(metadata, "completedPercent", f"{where}.metadata"),
        snapshots=_snapshots(metadata, f"{where}.metadata"),
    )
    return Operation(
        name=name, done=done, progress=progress, tuned_model_name=tuned_model_name, model=model, error=error
    )


def parse_tuned_model_page(data: object) -> tuple[list[TunedModel], str | None]:
    """One page of tunedModels.list and the token of the next page (None on the last)."""
    obj = read.mapping(data, "listTunedModelsResponse")
    items = read.items(obj, "tunedModels", "listTunedModelsResponse")
    models = [parse_tuned_model(item, f"tunedModels[{index}]") for index, item in enumerate(items)]
    return models, read.string(obj, "nextPageToken", "listTunedModelsResponse") or None


def parse_operation_page(data: object) -> tuple[list[Operation], str | None]:
    """One page of operations.list and the token of the next page (None on the last)."""
    obj = read.mapping(data, "listOperationsResponse")
    items = read.items(obj, "operations", "listOperationsResponse")
    operations = [parse_operation(item, f"operations[{index}]") for index, item in enumerate(items)]
    return operations, read.string(obj, "nextPageToken", "listOperationsResponse") or None


def parse_generated_text(data: object) -> str:
    """The first candidate's text, joined over its parts; "" when there is none (e.g. a blocked prompt)."""
    obj = read.mapping(data, "generateContentResponse")
    candidates = read.items(obj, "candidates", "generateContentResponse")
    if not candidates:
        return ""
    candidate = read.mapping(candidates[0], "candidates[0]")
    content = read.optional_mapping(candidate, "content", "candidates[0]")
    parts = read.items(content, "parts", "candidates[0].content")
    return "".join(
        read.string(
            read.mapping(part, f"candidates[0].content.parts[{index}]"), "text", f"candidates[0].content.parts[{index}]"
        )
        for index, part in enumerate(parts)
    )


def _state(value: object, where: str) -> ModelState:
    if isinstance(value, str):
        try:
            return ModelState(value)
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool) and value in _STATE_BY_NUMBER:
        return _STATE_BY_NUMBER[value]
    raise MalformedResponse(f"{where}: expected CREATING, ACTIVE or FAILED (or 1, 2, 3), got {read.short(value)}")


def _snapshots(obj: dict[str, Any], where: str) -> tuple[Snapshot, ...]:
    snapshots = []
    for index, item in enumerate(read.items(obj, "snapshots", where)):
        at = f"{where}.snapshots[{index}]"
        snapshot = read.mapping(item, at)
        snapshots.append(
            Snapshot(
                step=read.integer(snapshot, "step", at),
                epoch=read.integer(snapshot, "epoch", at),
                mean_loss=read.number(snapshot, "meanLoss", at),
                compute_time=read.timestamp(snapshot, "computeTime", at),
            )
        )
    return tuple(snapshots)


def _hyperparameters(task: dict[str, Any], where: str) -> Hyperparameters:
    at = f"{where}.hyperparameters"
    obj = read.optional_mapping(task, "hyperparameters", where)
    return Hyperparameters(
        epoch_count=read.optional_int(obj, "epochCount", at),
        batch_size=read.optional_int(obj, "batchSize", at),
        learning_rate=read.optional_number(obj, "learningRate", at),
        learning_rate_multiplier=read.optional_number(obj, "learningRateMultiplier", at),
    )


def _operation_error(obj: dict[str, Any], where: str) -> OperationError:
    error = read.mapping(obj["error"], f"{where}.error")
    return OperationError(
        code=read.integer(error, "code", f"{where}.error"), message=read.string(error, "message", f"{where}.error")
    )
