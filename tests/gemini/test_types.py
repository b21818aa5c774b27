"""The create request's body, and that typed values are immutable."""

from __future__ import annotations

import dataclasses

import pytest

from tunekeeper.backends.gemini.types import CreateTunedModelRequest, ModelState, TrainingExample

EXAMPLES = [TrainingExample("1", "2"), TrainingExample("3", "4")]


def test_body_in_camel_case() -> None:
    request = CreateTunedModelRequest(
        tuned_model_id="number-generator-42",
        display_name="number generator",
        base_model="models/gemini-1.5-flash-001-tuning",
        examples=EXAMPLES,
        epoch_count=5,
        batch_size=2,
        learning_rate=0.001,
    )
    assert request.to_json() == {
        "displayName": "number generator",
        "baseModel": "models/gemini-1.5-flash-001-tuning",
        "tuningTask": {
            "trainingData": {
                "examples": {"examples": [{"textInput": "1", "output": "2"}, {"textInput": "3", "output": "4"}]}
            },
            "hyperparameters": {"epochCount": 5, "batchSize": 2, "learningRate": 0.001},
        },
    }


def test_unset_hyperparameters_are_left_to_the_service() -> None:
    request = CreateTunedModelRequest("m-1", "m", "models/b", EXAMPLES, learning_rate_multiplier=2.0)
    assert request.to_json()["tuningTask"]["hyperparameters"] == {"learningRateMultiplier": 2.0}
    bare = CreateTunedModelRequest("m-1", "m", "models/b", EXAMPLES)
    assert "hyperparameters" not in bare.to_json()["tuningTask"]


def test_learning_rate_and_multiplier_are_exclusive() -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        CreateTunedModelRequest("m-1", "m", "models/b", EXAMPLES, learning_rate=0.1, learning_rate_multiplier=1.0)


def test_request_is_immutable_even_if_the_caller_keeps_its_list() -> None:
    examples = list(EXAMPLES)
    request = CreateTunedModelRequest("m-1", "m", "models/b", examples)
    examples.append(TrainingExample("5", "6"))
    assert len(request.examples) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.display_name = "other"  # type: ignore[misc]


def test_state_is_a_string_enum() -> None:
    assert ModelState.ACTIVE == "ACTIVE"
    assert str(ModelState.FAILED) == "FAILED"
