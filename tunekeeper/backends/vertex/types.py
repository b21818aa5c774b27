"""Vertex AI tuning and Cloud Storage, as plain immutable values: what the client sends and what it answers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

# A JSON object as sent to the service.
JsonObject = dict[str, Any]

# Google Cloud labels: at most 64 per resource; keys and values at most 63 characters of lowercase letters,
# digits, `_` and `-`, keys starting with a letter (values may be empty).
MAX_LABELS = 64
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
MAX_DISPLAY_NAME_CHARS = 128
_GS_URI = re.compile(r"gs://[^/]+/.+")


class JobState(StrEnum):
    """google.cloud.aiplatform.v1.JobState, by name."""

    UNSPECIFIED = "JOB_STATE_UNSPECIFIED"
    QUEUED = "JOB_STATE_QUEUED"
    PENDING = "JOB_STATE_PENDING"
    RUNNING = "JOB_STATE_RUNNING"
    SUCCEEDED = "JOB_STATE_SUCCEEDED"
    FAILED = "JOB_STATE_FAILED"
    CANCELLING = "JOB_STATE_CANCELLING"
    CANCELLED = "JOB_STATE_CANCELLED"
    PAUSED = "JOB_STATE_PAUSED"
    EXPIRED = "JOB_STATE_EXPIRED"
    UPDATING = "JOB_STATE_UPDATING"
    PARTIALLY_SUCCEEDED = "JOB_STATE_PARTIALLY_SUCCEEDED"

    @property
    def ended(self) -> bool:
        """Nothing more will happen to the job (google-genai's terminal states, and PARTIALLY_SUCCEEDED)."""
        return self in _ENDED


_ENDED = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED, JobState.PARTIALLY_SUCCEEDED}
)


class TuningSubState(StrEnum):
    """v1beta1's `tuningJobState`: what a RUNNING (or waiting) job is doing. Informational: a name this client
    does not know reads as UNSPECIFIED rather than failing the whole answer."""

    UNSPECIFIED = "TUNING_JOB_STATE_UNSPECIFIED"
    WAITING_FOR_QUOTA = "TUNING_JOB_STATE_WAITING_FOR_QUOTA"
    PROCESSING_DATASET = "TUNING_JOB_STATE_PROCESSING_DATASET"
    WAITING_FOR_CAPACITY = "TUNING_JOB_STATE_WAITING_FOR_CAPACITY"
    TUNING = "TUNING_JOB_STATE_TUNING"
    POST_PROCESSING = "TUNING_JOB_STATE_POST_PROCESSING"


class AdapterSize(StrEnum):
    ONE = "ADAPTER_SIZE_ONE"
    TWO = "ADAPTER_SIZE_TWO"
    FOUR = "ADAPTER_SIZE_FOUR"
    EIGHT = "ADAPTER_SIZE_EIGHT"
    SIXTEEN = "ADAPTER_SIZE_SIXTEEN"


def validate_labels(labels: Mapping[str, str]) -> None:
    """ValueError unless `labels` are valid Google Cloud labels (the service would refuse the request)."""
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels, not {len(labels)}")
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
            raise ValueError(f"label key {key!r}: 1-63 lowercase letters, digits, '_' or '-', starting with a letter")
        if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            raise ValueError(f"label {key!r}: value {value!r} is not 0-63 lowercase letters, digits, '_' or '-'")


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class TuningJobSpec:
    """A supervised tuning job to create; hyperparameters left None take the service's defaults.

    `labels` are how a job is found again (the service picks the job's id): a filtered list by label adopts
    a job whose create answer was lost.
    """

    base_model: str  # "gemini-2.5-flash" (or "publishers/google/models/gemini-2.5-flash")
    display_name: str
    training_uri: str  # gs://bucket/object, JSON Lines
    validation_uri: str | None = None
    epoch_count: int | None = None
    learning_rate_multiplier: float | None = None
    adapter_size: AdapterSize | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))  # no change under a retry
        if not self.base_model:
            raise ValueError("base_model is required")
        if len(self.display_name) > MAX_DISPLAY_NAME_CHARS:
            raise ValueError(f"display_name: at most {MAX_DISPLAY_NAME_CHARS} characters")
        for what, uri in (("training_uri", self.training_uri), ("validation_uri", self.validation_uri)):
            if uri is not None and not _GS_URI.fullmatch(uri):
                raise ValueError(f"{what} must be gs://bucket/object, not {uri!r}")
        if self.epoch_count is not None and self.epoch_count < 1:
            raise ValueError(f"epoch_count must be positive, not {self.epoch_count}")
        if self.learning_rate_multiplier is not None and not self.learning_rate_multiplier > 0:
            raise ValueError(f"learning_rate_multiplier must be positive, not {self.learning_rate_multiplier}")
        validate_labels(self.labels)

    def to_json(self) -> JsonObject:
        """The create request's body, a TuningJob in lowerCamelCase."""
        hyper: JsonObject = {}
        if self.epoch_count is not None:
            hyper["epochCount"] = self.epoch_count
        if self.learning_rate_multiplier is not None:
            hyper["learningRateMultiplier"] = self.learning_rate_multiplier
        if self.adapter_size is not None:
            hyper["adapterSize"] = self.adapter_size.value
        spec: JsonObject = {"trainingDatasetUri": self.training_uri}
        if self.validation_uri is not None:
            spec["validationDatasetUri"] = self.validation_uri
        if hyper:
            spec["hyperParameters"] = hyper
        body: JsonObject = {"baseModel": self.base_model, "supervisedTuningSpec": spec}
        if self.display_name:
            body["tunedModelDisplayName"] = self.display_name
        if self.description:
            body["description"] = self.description
        if self.labels:
            body["labels"] = dict(self.labels)
        return body


@dataclass(frozen=True, slots=True)
class TunedModelRef:
    """Where a succeeded job's model lives: `model` is `projects/.../models/ID@1`, `endpoint` serves it."""

    model: str
    endpoint: str


@dataclass(frozen=True, slots=True)
class Status:
    """A google.rpc.Status: why a job or an operation failed; `code` 1 is CANCELLED."""

    code: int
    message: str


@dataclass(frozen=True, slots=True)
class TuningJob:
    """A tuning job as the service reports it. Counts the service has not reported yet are None."""

    name: str  # projects/P/locations/L/tuningJobs/ID
    state: JobState
    sub_state: TuningSubState | None  # v1beta1 only; None on v1 or before the service says
    base_model: str
    display_name: str
    labels: Mapping[str, str]
    create_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    update_time: datetime | None
    completed_steps: int | None  # tuningJobMetadata.completedStepCount (v1beta1)
    total_steps: int | None  # tuningDataStats.supervisedTuningDataStats.tuningStepCount, once known
    completed_epochs: int | None  # tuningJobMetadata.completedEpochCount (v1beta1)
    epoch_count: int | None  # as the service runs it (defaults filled in)
    tuned_model: TunedModelRef | None
    error: Status | None
    experiment: str | None  # the metadata context where the service logs losses

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))


@dataclass(frozen=True, slots=True)
class DeployedModel:
    id: str  # the deployed model id, what undeployModel wants
    model: str  # projects/P/locations/L/models/ID


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    display_name: str
    deployed_models: tuple[DeployedModel, ...]

    @property
    def deployed_model_ids(self) -> tuple[str, ...]:
        return tuple(deployed.id for deployed in self.deployed_models)


@dataclass(frozen=True, slots=True)
class Operation:
    """A long-running operation (undeploy, delete). `error` is set when it is done and failed."""

    name: str
    done: bool
    error: Status | None = None


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """A Cloud Storage object's metadata. `md5_hash` and `crc32c` are base64, as the service gives them;
    `md5_hash` is empty for objects that have none (composite objects, some encrypted ones)."""

    bucket: str
    name: str
    size: int
    generation: int
    content_type: str
    md5_hash: str
    crc32c: str
    updated: datetime | None

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"
