"""Resources as the service renders them: proto3 JSON, camelCase, zero values left out, enums as names or
(with `$alt=json;enum-encoding=int`) as numbers. `trainingData` is input-only and never rendered."""

from __future__ import annotations

from typing import Any

from tunekeeper.emulator.gemini.models import TunedModel
from tunekeeper.emulator.timestamps import rfc3339

TUNED_MODEL_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.TunedModel"
CREATE_METADATA_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.CreateTunedModelMetadata"
STATE_NUMBERS = {"CREATING": 1, "ACTIVE": 2, "FAILED": 3}


def model_json(model: TunedModel, now: float, int_enums: bool) -> dict[str, Any]:
    """The TunedModel resource. The caller has settled the model at `now`."""
    body: dict[str, Any] = {
        "name": model.name,
        "displayName": model.display_name,
        "description": model.description,
    }
    if model.base_model is not None:
        body["baseModel"] = model.base_model
    else:
        body["tunedModelSource"] = {"tunedModel": model.source_tuned_model, "baseModel": model.source_base_model}
    body["state"] = STATE_NUMBERS[model.state] if int_enums else model.state
    body["createTime"] = model.create_time
    body["updateTime"] = rfc3339(model.updated_at)
    body["temperature"] = model.temperature
    body["topP"] = model.top_p
    body["topK"] = model.top_k
    task: dict[str, Any] = {"startTime": model.create_time}
    if model.done_at is not None:
        task["completeTime"] = rfc3339(model.done_at)
    snapshots = model.snapshots(now)
    if snapshots:
        task["snapshots"] = snapshots
    task["hyperparameters"] = model.hyperparameters
    body["tuningTask"] = task
    return body


def operation_json(model: TunedModel, now: float, int_enums: bool) -> dict[str, Any]:
    """The create operation. Running: no `done` (proto3 leaves false out), progress fields once non-zero."""
    total = model.total_steps
    metadata: dict[str, Any] = {"@type": CREATE_METADATA_TYPE, "totalSteps": total}
    completed = model.completed_steps(now)
    if completed:
        metadata["completedSteps"] = completed
        metadata["completedPercent"] = round(completed * 100.0 / total, 6)
        snapshots = model.snapshots(now)
        if snapshots:
            metadata["snapshots"] = snapshots
    metadata["tunedModel"] = model.name
    operation: dict[str, Any] = {"name": model.operation_name, "metadata": metadata}
    if model.done_at is not None:
        operation["done"] = True
        if model.error is not None:
            operation["error"] = {"code": model.error[0], "message": model.error[1]}
        else:
            operation["response"] = {"@type": TUNED_MODEL_TYPE, **model_json(model, now, int_enums)}
    return operation
