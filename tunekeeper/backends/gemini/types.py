"""The tuning service's vocabulary, as plain immutable values, shared by the client and dataset validation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from tunekeeper.backends.port import TrainingExample as TrainingExample  # the service's pairs are the port's

# Published limits of the tuning service (API-FACTS.md, "Dataset and model limits").
MAX_INPUT_CHARS = 40_000
MAX_OUTPUT_CHARS = 5_000
MAX_DISPLAY_NAME_CHARS = 40
TUNED_MODEL_ID_PATTERN = r"[a-z]([a-z0-9-]{0,38}[a-z0-9])?"

# A JSON object as sent to the service.
JsonObject = dict[str, Any]


class ModelState(StrEnum):
    CREATING = "CREATING"
    ACTIVE = "ACTIVE"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Training progress at one step: `compute_time` is when the step was computed."""

    step: int
    epoch: int
    mean_loss: float
    compute_time: datetime | None


@dataclass(frozen=True, slots=True)
class Hyperparameters:
    """As reported by the service; a field it leaves out is None (it picks defaults by dataset size)."""

    epoch_count: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    learning_rate_multiplier: float | None = None


@dataclass(frozen=True, slots=True)
class TunedModel:
    name: str  # "tunedModels/<id>"
    display_name: str
    state: ModelState
    base_model: str | None  # None when the model was tuned from another tuned model
    create_time: datetime | None
    update_time: datetime | None
    snapshots: tuple[Snapshot, ...] = ()
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    description: str = ""


@dataclass(frozen=True, slots=True)
class OperationProgress:
    total_steps: int = 0
    completed_steps: int = 0
    completed_percent: float = 0.0
    snapshots: tuple[Snapshot, ...] = ()


@dataclass(frozen=True, slots=True)
class OperationError:
    """Why a finished operation failed; code is a google.rpc.Code (1 = CANCELLED)."""

    code: int
    message: str


@dataclass(frozen=True, slots=True)
class Operation:
    """The long-running operation that tunes a model.

    When `done`, exactly one of `model` (the finished model) and `error` is normally set.
    """

    name: str  # "tunedModels/<id>/operations/<op>"
    done: bool
    progress: OperationProgress
    tuned_model_name: str
    model: TunedModel | None = None
    error: OperationError | None = None


@dataclass(frozen=True, slots=True)
class CreateTunedModelRequest:
    """A request to tune `base_model` on `examples`; hyperparameters left None take the service's defaults.

    `tuned_model_id` goes into the URL, the rest into the body (`to_json`).
    """

    tuned_model_id: str
    display_name: str
    base_model: str
    examples: Sequence[TrainingExample]
    epoch_count: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    learning_rate_multiplier: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        # A tuple keeps the frozen request from changing under a retry.
        object.__setattr__(self, "examples", tuple(self.examples))
        if self.learning_rate is not None and self.learning_rate_multiplier is not None:
            raise ValueError("learning_rate and learning_rate_multiplier are mutually exclusive")

    def to_json(self) -> JsonObject:
        """The request body, in the service's camelCase field names."""
        hyperparameters: JsonObject = {
            key: value
            for key, value in (
                ("epochCount", self.epoch_count),
                ("batchSize", self.batch_size),
                ("learningRate", self.learning_rate),
                ("learningRateMultiplier", self.learning_rate_multiplier),
            )
            if value is not None
        }
        tuning_task: JsonObject = {
            "trainingData": {
                "examples": {
                    "examples": [
                        {"textInput": example.text_input, "output": example.output} for example in self.examples
                    ]
                }
            }
        }
        if hyperparameters:
            tuning_task["hyperparameters"] = hyperparameters
        body: JsonObject = {"displayName": self.display_name, "baseModel": self.base_model, "tuningTask": tuning_task}
        if self.description:
            body["description"] = self.description
        return body
