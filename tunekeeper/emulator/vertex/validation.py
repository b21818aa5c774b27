"""Checks on a tuning job create, with the service's field names and limits, and the training data it names.

Bodies arrive camelCased (see jsonbody); unknown names are rejected as Google's JSON transcoding rejects them
(see fields.py). Every other refusal is 400 INVALID_ARGUMENT with a `google.rpc.BadRequest` field violation
naming the field in snake_case (`supervised_tuning_spec.training_dataset_uri`). A dataset line that is not a
valid example is reported by its number and a short description of what is wrong, never by its content.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunekeeper.emulator.errors import ApiError, invalid_argument
from tunekeeper.emulator.fields import Schema, check_fields, get_float, get_int, get_string
from tunekeeper.emulator.jsonbody import camel_to_snake
from tunekeeper.emulator.storage.objects import ObjectStore, parse_gs_uri

MAX_DISPLAY_NAME_CHARS = 128
MAX_LABELS = 64
MAX_LABEL_CHARS = 64
MAX_VALIDATION_EXAMPLES = 5_000
MAX_EXAMPLE_TOKENS = 131_072
CHARS_PER_TOKEN = 4  # the emulator's token estimate: one token per four characters of text
PUBLISHER_PREFIX = "publishers/google/models/"
DEFAULT_EPOCH_COUNT = 10
DEFAULT_LEARNING_RATE_MULTIPLIER = 1.0
DEFAULT_ADAPTER_SIZE = "ADAPTER_SIZE_FOUR"

TRAINING_FIELD = "supervised_tuning_spec.training_dataset_uri"
VALIDATION_FIELD = "supervised_tuning_spec.validation_dataset_uri"
HYPER_FIELD = "supervised_tuning_spec.hyper_parameters"

# google.cloud.aiplatform_v1.types.SupervisedHyperParameters.AdapterSize. THIRTY_TWO exists but no Gemini
# model accepts it; 2.5 Pro stops at EIGHT.
ADAPTER_SIZE_NUMBERS: dict[str, int] = {
    "ADAPTER_SIZE_UNSPECIFIED": 0,
    "ADAPTER_SIZE_ONE": 1,
    "ADAPTER_SIZE_TWO": 6,
    "ADAPTER_SIZE_FOUR": 2,
    "ADAPTER_SIZE_EIGHT": 3,
    "ADAPTER_SIZE_SIXTEEN": 4,
    "ADAPTER_SIZE_THIRTY_TWO": 5,
}
_ADAPTER_RANK = (
    "ADAPTER_SIZE_ONE",
    "ADAPTER_SIZE_TWO",
    "ADAPTER_SIZE_FOUR",
    "ADAPTER_SIZE_EIGHT",
    "ADAPTER_SIZE_SIXTEEN",
)
_LARGEST_ADAPTER_PRO = "ADAPTER_SIZE_EIGHT"
# v1beta1's SupervisedTuningSpec.TuningMode.
TUNING_MODE_NUMBERS: dict[str, int] = {
    "TUNING_MODE_UNSPECIFIED": 0,
    "TUNING_MODE_FULL": 1,
    "TUNING_MODE_PEFT_ADAPTER": 2,
}

_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,64}")

# TuningJob fields the emulator knows but does not simulate: a create that sets one is refused by name.
UNSUPPORTED_FIELDS = (
    "preTunedModel",
    "customBaseModel",
    "distillationSpec",
    "preferenceOptimizationSpec",
    "partnerModelTuningSpec",
    "reinforcementTuningSpec",
    "veoTuningSpec",
    "veoLoraTuningSpec",
    "fullFineTuningSpec",
    "encryptionSpec",
    "evaluationConfig",
)
# Output-only fields: accepted in a create body and ignored, as the service ignores them.
_OUTPUT_ONLY = (
    "name",
    "state",
    "createTime",
    "startTime",
    "endTime",
    "updateTime",
    "error",
    "experiment",
    "tunedModel",
    "tuningDataStats",
    "evaluateDatasetRuns",
    "pipelineJob",
)
_HYPER_V1: Schema = {"epochCount": None, "learningRateMultiplier": None, "adapterSize": None}
_HYPER_V1BETA1: Schema = {**_HYPER_V1, "learningRate": None, "batchSize": None}


def _job_schema(version: str) -> Schema:
    beta = version == "v1beta1"
    spec: dict[str, Any] = {
        "trainingDatasetUri": None,
        "validationDatasetUri": None,
        "hyperParameters": _HYPER_V1BETA1 if beta else _HYPER_V1,
        "exportLastCheckpointOnly": None,
        "evaluationConfig": None,
    }
    schema: dict[str, Any] = {
        "baseModel": None,
        "supervisedTuningSpec": spec,
        "tunedModelDisplayName": None,
        "description": None,
        "labels": None,  # a map: its keys are checked as labels, not as field names
        "serviceAccount": None,
        **dict.fromkeys(UNSUPPORTED_FIELDS),
        **dict.fromkeys(_OUTPUT_ONLY),
    }
    if beta:
        spec["tuningMode"] = None
        schema.update(dict.fromkeys(("outputUri", "tuningJobState", "tuningJobMetadata")))
    return schema


_SCHEMAS = {version: _job_schema(version) for version in ("v1", "v1beta1")}


@dataclass(frozen=True, slots=True)
class Dataset:
    """A dataset's examples as (last user turn, last model turn) pairs, and the counts the job reports."""

    uri: str
    examples: tuple[tuple[str, str], ...]
    characters: int  # text characters over all turns and system instructions
    tokens: int  # estimated: characters / CHARS_PER_TOKEN per example, rounded up


@dataclass(frozen=True, slots=True)
class CreateJobRequest:
    base_model: str  # as the client sent it
    model_id: str  # without the publisher prefix, e.g. "gemini-2.5-flash"
    display_name: str
    description: str
    labels: dict[str, str]
    service_account: str
    epoch_count: int
    learning_rate_multiplier: float
    learning_rate: float | None
    adapter_size: str
    batch_size: int | None
    export_last_checkpoint_only: bool
    tuning_mode: str | None
    training: Dataset
    validation: Dataset | None


def parse_create(
    body: Mapping[str, Any], version: str, storage: ObjectStore, base_models: frozenset[str]
) -> CreateJobRequest:
    """The create body (a TuningJob), checked cheapest first; the datasets are read last."""
    root = "tuningJob"
    check_fields(body, _SCHEMAS[version], root)
    for name in UNSUPPORTED_FIELDS:
        if body.get(name) is not None:
            raise invalid_argument(
                f"The emulator does not support {camel_to_snake(name)}: use supervised_tuning_spec.",
                camel_to_snake(name),
            )
    spec = body.get("supervisedTuningSpec")
    if isinstance(spec, dict) and spec.get("evaluationConfig") is not None:
        raise invalid_argument(
            "The emulator does not support supervised_tuning_spec.evaluation_config.",
            "supervised_tuning_spec.evaluation_config",
        )
    base_model = get_string(body, "baseModel", root) or ""
    model_id = _base_model(base_model, base_models)
    display_name = get_string(body, "tunedModelDisplayName", root) or ""
    if len(display_name) > MAX_DISPLAY_NAME_CHARS:
        raise invalid_argument(
            f"tuned_model_display_name must be at most {MAX_DISPLAY_NAME_CHARS} characters, got {len(display_name)}.",
            "tuned_model_display_name",
        )
    labels = _labels(body.get("labels"))
    if not isinstance(spec, dict) or not spec.get("trainingDatasetUri"):
        raise invalid_argument(
            "A training dataset is required: set supervised_tuning_spec.training_dataset_uri.", TRAINING_FIELD
        )
    spec_path = f"{root}.supervisedTuningSpec"
    hyper = spec.get("hyperParameters") or {}
    hyper_path = f"{spec_path}.hyperParameters"
    epoch_count = get_int(hyper, "epochCount", hyper_path, "TYPE_INT64")
    multiplier = get_float(hyper, "learningRateMultiplier", hyper_path)
    learning_rate = get_float(hyper, "learningRate", hyper_path)
    batch_size = get_int(hyper, "batchSize", hyper_path, "TYPE_INT64")
    for name, number in (
        ("epoch_count", epoch_count),
        ("learning_rate_multiplier", multiplier),
        ("learning_rate", learning_rate),
        ("batch_size", batch_size),
    ):
        if number is not None and number <= 0:
            raise invalid_argument(f"{name} must be positive, got {number}.", f"{HYPER_FIELD}.{name}")
    adapter_size = _adapter_size(hyper.get("adapterSize"), model_id)
    tuning_mode = _enum(spec.get("tuningMode"), TUNING_MODE_NUMBERS, "supervised_tuning_spec.tuning_mode")
    export_last = spec.get("exportLastCheckpointOnly")
    if export_last is not None and not isinstance(export_last, bool):
        raise invalid_argument(
            "Invalid value at 'tuning_job.supervised_tuning_spec.export_last_checkpoint_only' (TYPE_BOOL).",
            "supervised_tuning_spec.export_last_checkpoint_only",
        )
    training_uri = get_string(spec, "trainingDatasetUri", spec_path) or ""
    validation_uri = get_string(spec, "validationDatasetUri", spec_path) or None
    training = read_dataset(storage, training_uri, TRAINING_FIELD, "training")
    validation = None
    if validation_uri is not None:
        validation = read_dataset(storage, validation_uri, VALIDATION_FIELD, "validation")
        if len(validation.examples) > MAX_VALIDATION_EXAMPLES:
            raise invalid_argument(
                f"The validation dataset has {len(validation.examples)} examples, more than the "
                f"{MAX_VALIDATION_EXAMPLES} allowed.",
                VALIDATION_FIELD,
            )
    return CreateJobRequest(
        base_model=base_model,
        model_id=model_id,
        display_name=display_name,
        description=get_string(body, "description", root) or "",
        labels=labels,
        service_account=get_string(body, "serviceAccount", root) or "",
        epoch_count=epoch_count or DEFAULT_EPOCH_COUNT,
        learning_rate_multiplier=multiplier or DEFAULT_LEARNING_RATE_MULTIPLIER,
        learning_rate=learning_rate,
        adapter_size=adapter_size or DEFAULT_ADAPTER_SIZE,
        batch_size=batch_size,
        export_last_checkpoint_only=bool(export_last),
        tuning_mode=tuning_mode,
        training=training,
        validation=validation,
    )


def _base_model(base_model: str, base_models: frozenset[str]) -> str:
    """The model's short id. Both `gemini-2.5-flash` and `publishers/google/models/gemini-2.5-flash` name it."""
    if not base_model:
        raise invalid_argument("A base model is required: set base_model.", "base_model")
    model_id = base_model.removeprefix(PUBLISHER_PREFIX)
    if model_id not in base_models:
        raise invalid_argument(
            f"Base model {base_model} is not supported for tuning. Supported: {', '.join(sorted(base_models))}.",
            "base_model",
        )
    return model_id


def _labels(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_argument("Invalid value at 'tuning_job.labels': expected a map of strings.", "labels")
    if len(value) > MAX_LABELS:
        raise invalid_argument(f"At most {MAX_LABELS} labels are allowed, got {len(value)}.", "labels")
    labels: dict[str, str] = {}
    for key, item in value.items():
        shown = repr(key[:MAX_LABEL_CHARS])
        if _LABEL_KEY.fullmatch(key) is None:
            raise invalid_argument(
                f"Label key {shown} is invalid: keys are 1-{MAX_LABEL_CHARS} lowercase letters, digits, '_' or '-', "
                "starting with a letter.",
                "labels",
            )
        if not isinstance(item, str) or _LABEL_VALUE.fullmatch(item) is None:
            raise invalid_argument(
                f"The value of label {shown} is invalid: values are at most {MAX_LABEL_CHARS} lowercase letters, "
                "digits, '_' or '-'.",
                "labels",
            )
        labels[key] = item
    return labels


def _enum(value: Any, numbers: Mapping[str, int], field: str) -> str | None:
    """An enum given by name or (as proto JSON allows) by number; None when absent or UNSPECIFIED."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        for name, number in numbers.items():
            if number == value:
                return None if number == 0 else name
    elif isinstance(value, str) and value in numbers:
        return None if numbers[value] == 0 else value
    raise invalid_argument(f"Invalid value at 'tuning_job.{field}': not one of {', '.join(numbers)}.", field)


def _adapter_size(value: Any, model_id: str) -> str | None:
    field = f"{HYPER_FIELD}.adapter_size"
    size = _enum(value, ADAPTER_SIZE_NUMBERS, field)
    if size is None:
        return None
    largest = _LARGEST_ADAPTER_PRO if model_id.startswith("gemini-2.5-pro") else _ADAPTER_RANK[-1]
    if size not in _ADAPTER_RANK or _ADAPTER_RANK.index(size) > _ADAPTER_RANK.index(largest):
        raise invalid_argument(f"Adapter size {size} is not supported for {model_id}: at most {largest}.", field)
    return size


def read_dataset(storage: ObjectStore, uri: str, field: str, kind: str) -> Dataset:
    """Read a JSONL dataset from the emulator's Cloud Storage and check every line. Blank lines are skipped."""
    try:
        bucket, name = parse_gs_uri(uri)
        stored = storage.get(bucket, name)
    except ApiError as error:
        if error.status == "NOT_FOUND":
            raise invalid_argument(f"The {kind} dataset {uri} does not exist: {error.message}", field) from None
        raise invalid_argument(f"The {kind} dataset must be a Cloud Storage URI: {error.message}", field) from None
    examples: list[tuple[str, str]] = []
    characters = 0
    tokens = 0
    for number, raw in enumerate(stored.data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            pair, line_characters = _example(raw)
        except _BadLine as bad:
            raise invalid_argument(f"The {kind} dataset {uri} is invalid: line {number}: {bad}", field) from None
        line_tokens = math.ceil(line_characters / CHARS_PER_TOKEN)
        if line_tokens > MAX_EXAMPLE_TOKENS:
            raise invalid_argument(
                f"The {kind} dataset {uri} is invalid: line {number}: the example has about {line_tokens} tokens, "
                f"more than the {MAX_EXAMPLE_TOKENS} allowed.",
                field,
            )
        examples.append(pair)
        characters += line_characters
        tokens += line_tokens
    if not examples:
        raise invalid_argument(f"The {kind} dataset {uri} has no examples.", field)
    return Dataset(uri, tuple(examples), characters, tokens)


class _BadLine(Exception):
    """Why a dataset line is not an example: a short description that never quotes the line."""


def _example(raw: bytes) -> tuple[tuple[str, str], int]:
    try:
        line = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _BadLine("not valid UTF-8.") from None
    except json.JSONDecodeError:
        raise _BadLine("not valid JSON.") from None
    if not isinstance(line, dict):
        raise _BadLine("not a JSON object.")
    extra = set(line) - {"contents", "systemInstruction", "system_instruction"}
    if extra:
        raise _BadLine("unexpected field: an example has contents and, optionally, systemInstruction.")
    characters = 0
    system = line.get("systemInstruction", line.get("system_instruction"))
    if system is not None:
        if not isinstance(system, dict):
            raise _BadLine("systemInstruction must be an object with parts.")
        characters += len(_text(system.get("parts"), "systemInstruction"))
    contents = line.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _BadLine("contents must be a non-empty list of turns.")
    user_text = ""
    model_text = ""
    for index, turn in enumerate(contents):
        where = f"contents[{index}]"
        if not isinstance(turn, dict):
            raise _BadLine(f"{where} must be an object with role and parts.")
        expected = "user" if index % 2 == 0 else "model"
        role = turn.get("role")
        if role not in ("user", "model"):
            raise _BadLine(f'{where}.role must be "user" or "model".')
        if role != expected:
            raise _BadLine(f'{where}.role must be "{expected}": turns alternate, starting with user.')
        text = _text(turn.get("parts"), where)
        characters += len(text)
        if role == "user":
            user_text = text
        else:
            model_text = text
    if len(contents) % 2 != 0:
        raise _BadLine("the last turn must be the model's.")
    return (user_text, model_text), characters


def _text(parts: Any, where: str) -> str:
    """The text of a turn's parts, which must all be text parts."""
    if not isinstance(parts, list) or not parts:
        raise _BadLine(f"{where}.parts must be a non-empty list.")
    texts: list[str] = []
    for index, part in enumerate(parts):
        if not isinstance(part, dict) or set(part) != {"text"} or not isinstance(part["text"], str):
            raise _BadLine(f'{where}.parts[{index}] must be a text part: {{"text": string}}.')
        texts.append(part["text"])
    return "".join(texts)
