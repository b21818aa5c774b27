"""Checks on create and patch bodies, with the service's field paths and limits.

Bodies arrive camelCased (see jsonbody). Unknown fields are rejected the way Google's JSON transcoding rejects
them (`Unknown name "x" at 'tuned_model.tuning_task': Cannot find field.`), so typos surface here rather than
being silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunekeeper.emulator.errors import invalid_argument
from tunekeeper.emulator.fields import Schema, check_fields, get_float, get_int, get_string, snake_path
from tunekeeper.emulator.jsonbody import camel_to_snake, snake_to_camel

MAX_DISPLAY_NAME_CHARS = 40
MAX_INPUT_CHARS = 40_000
MAX_OUTPUT_CHARS = 5_000
TUNED_MODEL_ID = re.compile(r"[a-z]([a-z0-9-]{0,38}[a-z0-9])?")

# Datasets larger than this get the larger-dataset defaults (batch size 16, learning rate 0.0002).
LARGE_DATASET_EXAMPLES = 500
DEFAULT_EPOCH_COUNT = 5
DEFAULT_BATCH_SIZE = 4
LARGE_DATASET_BATCH_SIZE = 16
DEFAULT_LEARNING_RATE = 0.001
LARGE_DATASET_LEARNING_RATE = 0.0002

# Sampling defaults of the tunable base models, copied to tuned models that do not set their own.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 64

# Field tree of TunedModel as accepted in a request; None marks a leaf, a one-item list a repeated message.
_EXAMPLE: Schema = {"textInput": None, "output": None}
_TUNED_MODEL: Schema = {
    "name": None,
    "displayName": None,
    "description": None,
    "temperature": None,
    "topP": None,
    "topK": None,
    "state": None,
    "createTime": None,
    "updateTime": None,
    "readerProjectNumbers": None,
    "baseModel": None,
    "tunedModelSource": {"tunedModel": None, "baseModel": None},
    "tuningTask": {
        "startTime": None,
        "completeTime": None,
        "snapshots": None,
        "hyperparameters": {
            "learningRate": None,
            "learningRateMultiplier": None,
            "epochCount": None,
            "batchSize": None,
        },
        "trainingData": {"examples": {"examples": [_EXAMPLE]}},
    },
}
UPDATABLE_FIELDS = ("displayName", "description", "temperature", "topP", "topK")


@dataclass(frozen=True, slots=True)
class CreateRequest:
    tuned_model_id: str | None
    display_name: str
    description: str
    base_model: str | None
    source_tuned_model: str | None  # "tunedModels/..." when tuning from a tuned model
    temperature: float | None
    top_p: float | None
    top_k: int | None
    epoch_count: int
    batch_size: int
    learning_rate: float | None
    learning_rate_multiplier: float | None
    examples: tuple[tuple[str, str], ...]


def _object(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def check_display_name(name: str) -> None:
    if len(name) > MAX_DISPLAY_NAME_CHARS:
        raise invalid_argument(
            f"display_name must be at most {MAX_DISPLAY_NAME_CHARS} characters, got {len(name)}.",
            "tuned_model.display_name",
        )


def check_sampling(temperature: float | None, top_p: float | None, top_k: int | None, path: str) -> None:
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise invalid_argument(f"temperature must be between 0 and 2, got {temperature}.", f"{path}.temperature")
    if top_p is not None and not 0.0 <= top_p <= 1.0:
        raise invalid_argument(f"top_p must be between 0 and 1, got {top_p}.", f"{path}.top_p")
    if top_k is not None and top_k < 1:
        raise invalid_argument(f"top_k must be at least 1, got {top_k}.", f"{path}.top_k")


def check_tuned_model_id(tuned_model_id: str) -> None:
    if TUNED_MODEL_ID.fullmatch(tuned_model_id) is None:
        raise invalid_argument(
            f"tuned_model_id {tuned_model_id!r} is invalid: it must match {TUNED_MODEL_ID.pattern} "
            "(lowercase letters, digits and hyphens, at most 40 characters, starting with a letter).",
            "tuned_model_id",
        )


def _examples(task: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    examples = _object(_object(task, "trainingData"), "examples").get("examples")
    path = "tunedModel.tuningTask.trainingData.examples.examples"
    if not examples:
        raise invalid_argument(
            "Training data is required: tuning_task.training_data.examples.examples must not be empty.",
            snake_path(path),
        )
    pairs: list[tuple[str, str]] = []
    for index, example in enumerate(examples):
        item_path = f"{path}[{index}]"
        text_input = get_string(example, "textInput", item_path)
        output = get_string(example, "output", item_path)
        if not text_input:
            raise invalid_argument(f"Example {index}: text_input is required.", snake_path(f"{item_path}.textInput"))
        if output is None or output == "":
            raise invalid_argument(f"Example {index}: output is required.", snake_path(f"{item_path}.output"))
        if len(text_input) > MAX_INPUT_CHARS:
            raise invalid_argument(
                f"Example {index}: text_input has {len(text_input)} characters, more than the "
                f"{MAX_INPUT_CHARS} allowed.",
                snake_path(f"{item_path}.textInput"),
            )
        if len(output) > MAX_OUTPUT_CHARS:
            raise invalid_argument(
                f"Example {index}: output has {len(output)} characters, more than the {MAX_OUTPUT_CHARS} allowed.",
                snake_path(f"{item_path}.output"),
            )
        pairs.append((text_input, output))
    return tuple(pairs)


def parse_create(body: Mapping[str, Any], tuned_model_id: str | None) -> CreateRequest:
    """The create body (a TunedModel) and the `tunedModelId` query parameter, checked and with defaults."""
    root = "tunedModel"
    check_fields(body, _TUNED_MODEL, root)
    if tuned_model_id is not None:
        check_tuned_model_id(tuned_model_id)
    display_name = get_string(body, "displayName", root) or ""
    check_display_name(display_name)
    description = get_string(body, "description", root) or ""
    base_model = get_string(body, "baseModel", root) or None
    source = get_string(_object(body, "tunedModelSource"), "tunedModel", f"{root}.tunedModelSource") or None
    if base_model and source:
        raise invalid_argument(
            "Only one of base_model and tuned_model_source may be set.", "tuned_model.tuned_model_source"
        )
    if not base_model and not source:
        raise invalid_argument(
            "A source model is required: set base_model or tuned_model_source.tuned_model.",
            "tuned_model.base_model",
        )
    temperature = get_float(body, "temperature", root)
    top_p = get_float(body, "topP", root)
    top_k = get_int(body, "topK", root)
    check_sampling(temperature, top_p, top_k, "tuned_model")

    task = _object(body, "tuningTask")
    examples = _examples(task)
    hyper_path = f"{root}.tuningTask.hyperparameters"
    hyper = _object(task, "hyperparameters")
    large = len(examples) > LARGE_DATASET_EXAMPLES
    epoch_count = get_int(hyper, "epochCount", hyper_path)
    batch_size = get_int(hyper, "batchSize", hyper_path)
    learning_rate = get_float(hyper, "learningRate", hyper_path)
    multiplier = get_float(hyper, "learningRateMultiplier", hyper_path)
    if learning_rate is not None and multiplier is not None:
        raise invalid_argument(
            "Only one of learning_rate and learning_rate_multiplier may be set.",
            snake_path(f"{hyper_path}.learningRate"),
        )
    for name, number in (
        ("epoch_count", epoch_count),
        ("batch_size", batch_size),
        ("learning_rate", learning_rate),
        ("learning_rate_multiplier", multiplier),
    ):
        if number is not None and number <= 0:
            raise invalid_argument(f"{name} must be positive, got {number}.", f"{snake_path(hyper_path)}.{name}")
    if learning_rate is None and multiplier is None:
        learning_rate = LARGE_DATASET_LEARNING_RATE if large else DEFAULT_LEARNING_RATE
    return CreateRequest(
        tuned_model_id=tuned_model_id,
        display_name=display_name,
        description=description,
        base_model=base_model,
        source_tuned_model=source,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        epoch_count=epoch_count or DEFAULT_EPOCH_COUNT,
        batch_size=batch_size or (LARGE_DATASET_BATCH_SIZE if large else DEFAULT_BATCH_SIZE),
        learning_rate=learning_rate,
        learning_rate_multiplier=multiplier,
        examples=examples,
    )


def parse_update_mask(mask: str | None, body: Mapping[str, Any]) -> tuple[str, ...]:
    """`updateMask` (comma-separated, snake or camel) to camelCase field names.

    Without a mask, every updatable field present in the body is updated (AIP-134's implied mask).
    """
    if mask is None or not mask.strip():
        return tuple(name for name in UPDATABLE_FIELDS if name in body)
    fields: list[str] = []
    for raw in mask.split(","):
        name = snake_to_camel(raw.strip())
        if not name:
            continue
        if name not in UPDATABLE_FIELDS:
            raise invalid_argument(
                f"Invalid update mask path {raw.strip()!r}: updatable fields are "
                + ", ".join(camel_to_snake(field) for field in UPDATABLE_FIELDS)
                + ".",
                "update_mask",
            )
        fields.append(name)
    return tuple(fields)


@dataclass(frozen=True, slots=True)
class PatchRequest:
    fields: tuple[str, ...]
    display_name: str | None
    description: str | None
    temperature: float | None
    top_p: float | None
    top_k: int | None


def parse_patch(body: Mapping[str, Any], mask: str | None) -> PatchRequest:
    root = "tunedModel"
    check_fields(body, _TUNED_MODEL, root)
    fields = parse_update_mask(mask, body)
    display_name = get_string(body, "displayName", root)
    if "displayName" in fields:
        check_display_name(display_name or "")
    temperature = get_float(body, "temperature", root)
    top_p = get_float(body, "topP", root)
    top_k = get_int(body, "topK", root)
    check_sampling(temperature, top_p, top_k, "tuned_model")
    return PatchRequest(
        fields=fields,
        display_name=display_name,
        description=get_string(body, "description", root),
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
    )
