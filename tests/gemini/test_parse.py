"""Service JSON to typed values: recorded shapes parse, anything malformed raises MalformedResponse only."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from tunekeeper.backends.gemini.parse import (
    parse_generated_text,
    parse_operation,
    parse_operation_page,
    parse_tuned_model,
    parse_tuned_model_page,
)
from tunekeeper.backends.gemini.types import Hyperparameters, ModelState, OperationError, Snapshot
from tunekeeper.backends.googleapi import read
from tunekeeper.backends.googleapi.errors import MalformedResponse

# The recorded shapes of API-FACTS.md.
MODEL: dict[str, Any] = {
    "name": "tunedModels/number-generator-model-dzlmi0gswwqb",
    "displayName": "number generator model",
    "description": "",
    "baseModel": "models/gemini-1.5-flash-001-tuning",
    "state": "ACTIVE",
    "createTime": "2024-03-14T15:05:11.123Z",
    "updateTime": "2024-03-14T15:11:40Z",
    "temperature": 1.0,
    "topP": 0.95,
    "topK": 64,
    "tuningTask": {
        "startTime": "2024-03-14T15:05:12Z",
        "completeTime": "2024-03-14T15:11:40Z",
        "snapshots": [{"step": 19, "epoch": 5, "meanLoss": 1.402067, "computeTime": "2024-03-14T15:11:23.766989274Z"}],
        "hyperparameters": {"epochCount": 5, "batchSize": 4, "learningRate": 0.001},
    },
}
CREATED_OPERATION: dict[str, Any] = {
    "name": "tunedModels/number-generator-model-dzlmi0gswwqb/operations/bvl8dymw0fhw",
    "metadata": {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.CreateTunedModelMetadata",
        "totalSteps": 38,
        "tunedModel": "tunedModels/number-generator-model-dzlmi0gswwqb",
    },
}


def test_tuned_model() -> None:
    model = parse_tuned_model(MODEL)
    assert model.name == "tunedModels/number-generator-model-dzlmi0gswwqb"
    assert model.display_name == "number generator model"
    assert model.state is ModelState.ACTIVE
    assert model.base_model == "models/gemini-1.5-flash-001-tuning"
    assert model.create_time == datetime(2024, 3, 14, 15, 5, 11, 123000, tzinfo=UTC)
    assert model.update_time == datetime(2024, 3, 14, 15, 11, 40, tzinfo=UTC)
    assert model.snapshots == (
        Snapshot(
            step=19, epoch=5, mean_loss=1.402067, compute_time=datetime(2024, 3, 14, 15, 11, 23, 766989, tzinfo=UTC)
        ),
    )
    assert model.hyperparameters == Hyperparameters(epoch_count=5, batch_size=4, learning_rate=0.001)


def test_minimal_tuned_model_takes_proto3_defaults() -> None:
    model = parse_tuned_model({"name": "tunedModels/x", "state": "CREATING", "tuningTask": {"snapshots": [{}]}})
    assert model.display_name == ""
    assert model.base_model is None
    assert model.create_time is None
    assert model.snapshots == (Snapshot(step=0, epoch=0, mean_loss=0.0, compute_time=None),)
    assert model.hyperparameters == Hyperparameters()


@pytest.mark.parametrize(("value", "state"), [(1, ModelState.CREATING), (2, ModelState.ACTIVE), (3, ModelState.FAILED)])
def test_states_as_integers(value: int, state: ModelState) -> None:
    assert parse_tuned_model({**MODEL, "state": value}).state is state


def test_int64_as_strings_and_naive_times_as_utc() -> None:
    data = copy.deepcopy(MODEL)
    data["tuningTask"]["snapshots"][0]["step"] = "19"
    data["createTime"] = "2024-03-14T15:05:11"
    model = parse_tuned_model(data)
    assert model.snapshots[0].step == 19
    assert model.create_time == datetime(2024, 3, 14, 15, 5, 11, tzinfo=UTC)


def broken_models() -> list[tuple[str, object]]:
    def with_(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
        data = copy.deepcopy(MODEL)
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return data

    without_name = copy.deepcopy(MODEL)
    del without_name["name"]
    without_state = copy.deepcopy(MODEL)
    del without_state["state"]
    return [
        ("not an object", ["tunedModels/x"]),
        ("null", None),
        ("no name", without_name),
        ("no state", without_state),
        ("unknown state", with_(("state",), "CANCELLED")),
        ("state 0", with_(("state",), 0)),
        ("state true", with_(("state",), True)),
        ("name is a number", with_(("name",), 7)),
        ("bad time", with_(("createTime",), "yesterday")),
        ("time is a number", with_(("createTime",), 1710428711)),
        ("snapshots not a list", with_(("tuningTask", "snapshots"), {"step": 1})),
        ("snapshot not an object", with_(("tuningTask", "snapshots", 0), 19)),
        ("step is a float", with_(("tuningTask", "snapshots", 0, "step"), 1.5)),
        ("step is a bool", with_(("tuningTask", "snapshots", 0, "step"), True)),
        ("loss is text", with_(("tuningTask", "snapshots", 0, "meanLoss"), "low")),
        ("hyperparameters not an object", with_(("tuningTask", "hyperparameters"), [5])),
        ("tuningTask not an object", with_(("tuningTask",), "x")),
    ]


@pytest.mark.parametrize(("case", "data"), broken_models(), ids=[case for case, _ in broken_models()])
def test_malformed_models(case: str, data: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_tuned_model(data)


def test_created_operation() -> None:
    operation = parse_operation(CREATED_OPERATION)
    assert operation.name == CREATED_OPERATION["name"]
    assert not operation.done
    assert operation.tuned_model_name == "tunedModels/number-generator-model-dzlmi0gswwqb"
    assert operation.progress.total_steps == 38
    assert operation.progress.completed_steps == 0
    assert operation.model is None
    assert operation.error is None


def test_running_operation_progress() -> None:
    data = copy.deepcopy(CREATED_OPERATION)
    data["metadata"].update(
        completedSteps=19, completedPercent=50, snapshots=[{"step": 19, "epoch": 2, "meanLoss": 3.5}]
    )
    progress = parse_operation(data).progress
    assert (progress.completed_steps, progress.completed_percent) == (19, 50.0)
    assert progress.snapshots[0].mean_loss == 3.5


def test_finished_operation_carries_the_model() -> None:
    data = {**CREATED_OPERATION, "done": True, "response": {"@type": "type.googleapis.com/x.TunedModel", **MODEL}}
    operation = parse_operation(data)
    assert operation.done
    assert operation.model is not None
    assert operation.model.state is ModelState.ACTIVE


def test_failed_operation_carries_the_error() -> None:
    operation = parse_operation({**CREATED_OPERATION, "done": True, "error": {"code": 1, "message": "cancelled"}})
    assert operation.error == OperationError(code=1, message="cancelled")
    assert operation.model is None


def test_tuned_model_name_falls_back_to_the_operation_name() -> None:
    operation = parse_operation({"name": "tunedModels/abc/operations/op1"})
    assert operation.tuned_model_name == "tunedModels/abc"


@pytest.mark.parametrize(
    "data",
    [
        {"metadata": {"tunedModel": "tunedModels/x"}},
        {"name": "operations/x"},
        {**CREATED_OPERATION, "done": "yes"},
        {**CREATED_OPERATION, "metadata": "x"},
        {**CREATED_OPERATION, "done": True, "response": {"name": "tunedModels/x"}},
        {**CREATED_OPERATION, "done": True, "error": "boom"},
        {**CREATED_OPERATION, "metadata": {"totalSteps": "many", "tunedModel": "tunedModels/x"}},
        "<html>",
    ],
)
def test_malformed_operations(data: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_operation(data)


def test_pages() -> None:
    models, token = parse_tuned_model_page({"tunedModels": [MODEL, MODEL], "nextPageToken": "abc"})
    assert len(models) == 2
    assert token == "abc"
    assert parse_tuned_model_page({}) == ([], None)
    assert parse_tuned_model_page({"tunedModels": [], "nextPageToken": ""}) == ([], None)
    operations, token = parse_operation_page({"operations": [CREATED_OPERATION]})
    assert [op.name for op in operations] == [CREATED_OPERATION["name"]]
    assert token is None


@pytest.mark.parametrize("data", [{"tunedModels": {}}, {"tunedModels": [7]}, {"nextPageToken": 3}, []])
def test_malformed_pages(data: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_tuned_model_page(data)


def test_generated_text_joins_the_first_candidates_parts() -> None:
    data = {
        "candidates": [
            {"content": {"parts": [{"text": "LX"}, {"text": "IV"}], "role": "model"}, "finishReason": "STOP"},
            {"content": {"parts": [{"text": "other"}]}},
        ],
        "usageMetadata": {"promptTokenCount": 3},
    }
    assert parse_generated_text(data) == "LXIV"


@pytest.mark.parametrize("data", [{}, {"candidates": []}, {"candidates": [{"finishReason": "SAFETY"}]}])
def test_no_text(data: object) -> None:
    assert parse_generated_text(data) == ""


@pytest.mark.parametrize(
    "data",
    [{"candidates": "x"}, {"candidates": [3]}, {"candidates": [{"content": {"parts": [{"text": 5}]}}]}, "text"],
)
def test_malformed_generated(data: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_generated_text(data)


def test_empty_responses() -> None:
    read.empty({}, "delete")
    with pytest.raises(MalformedResponse):
        read.empty("", "delete")
