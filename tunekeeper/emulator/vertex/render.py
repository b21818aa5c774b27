"""The TuningJob resource as the service renders it: proto3 JSON, camelCase, zero values left out, int64 fields
as strings, enums as names or (with `$alt=json;enum-encoding=int`) as numbers. `/v1/` has no `tuningJobState`
or `tuningJobMetadata`: they exist in v1beta1 only."""

from __future__ import annotations

from typing import Any

from tunekeeper.emulator.timestamps import rfc3339
from tunekeeper.emulator.vertex.jobs import (
    CANCELLED,
    CANCELLED_CODE,
    CANCELLED_MESSAGE,
    FAILED,
    FAILED_MESSAGE,
    INTERNAL_CODE,
    SUCCEEDED,
    TuningJob,
)
from tunekeeper.emulator.vertex.validation import ADAPTER_SIZE_NUMBERS, TUNING_MODE_NUMBERS

# google/cloud/aiplatform_v1/types/job_state.py
JOB_STATE_NUMBERS: dict[str, int] = {
    "JOB_STATE_UNSPECIFIED": 0,
    "JOB_STATE_QUEUED": 1,
    "JOB_STATE_PENDING": 2,
    "JOB_STATE_RUNNING": 3,
    "JOB_STATE_SUCCEEDED": 4,
    "JOB_STATE_FAILED": 5,
    "JOB_STATE_CANCELLING": 6,
    "JOB_STATE_CANCELLED": 7,
    "JOB_STATE_PAUSED": 8,
    "JOB_STATE_EXPIRED": 9,
    "JOB_STATE_UPDATING": 10,
    "JOB_STATE_PARTIALLY_SUCCEEDED": 11,
}
# v1beta1's TuningJobState. The installed aiplatform_v1beta1 types do not have it yet; the numbers follow the
# order google-genai lists the names in (unverified: see README).
TUNING_JOB_STATE_NUMBERS: dict[str, int] = {
    "TUNING_JOB_STATE_UNSPECIFIED": 0,
    "TUNING_JOB_STATE_WAITING_FOR_QUOTA": 1,
    "TUNING_JOB_STATE_PROCESSING_DATASET": 2,
    "TUNING_JOB_STATE_WAITING_FOR_CAPACITY": 3,
    "TUNING_JOB_STATE_TUNING": 4,
    "TUNING_JOB_STATE_POST_PROCESSING": 5,
}


def _enum(name: str, numbers: dict[str, int], int_enums: bool) -> str | int:
    return numbers[name] if int_enums else name


def tuning_job_json(job: TuningJob, now: float, version: str, int_enums: bool) -> dict[str, Any]:
    """The TuningJob at `now`. The caller has advanced the store to `now` (so a succeeded job has its model)."""
    request = job.request
    beta = version == "v1beta1"
    state, sub_state = job.state(now)
    body: dict[str, Any] = {"name": job.name}
    if request.display_name:
        body["tunedModelDisplayName"] = request.display_name
    if request.description:
        body["description"] = request.description
    body["baseModel"] = request.base_model

    hyper: dict[str, Any] = {
        "epochCount": str(request.epoch_count),
        "learningRateMultiplier": request.learning_rate_multiplier,
        "adapterSize": _enum(request.adapter_size, ADAPTER_SIZE_NUMBERS, int_enums),
    }
    if beta and request.learning_rate is not None:
        hyper["learningRate"] = request.learning_rate
    if beta and request.batch_size is not None:
        hyper["batchSize"] = str(request.batch_size)
    spec: dict[str, Any] = {"trainingDatasetUri": request.training.uri}
    if request.validation is not None:
        spec["validationDatasetUri"] = request.validation.uri
    spec["hyperParameters"] = hyper
    if request.export_last_checkpoint_only:
        spec["exportLastCheckpointOnly"] = True
    if beta and request.tuning_mode is not None:
        spec["tuningMode"] = _enum(request.tuning_mode, TUNING_MODE_NUMBERS, int_enums)
    body["supervisedTuningSpec"] = spec

    body["state"] = _enum(state, JOB_STATE_NUMBERS, int_enums)
    body["createTime"] = rfc3339(job.created_at)
    started = job.start_time(now)
    if started is not None:
        body["startTime"] = rfc3339(started)
    ended = job.end_time(now)
    if ended is not None:
        body["endTime"] = rfc3339(ended)
    body["updateTime"] = rfc3339(job.update_time(now))
    if state == FAILED:
        body["error"] = {"code": INTERNAL_CODE, "message": FAILED_MESSAGE}
    elif state == CANCELLED:
        body["error"] = {"code": CANCELLED_CODE, "message": CANCELLED_MESSAGE}
    if request.labels:
        body["labels"] = dict(request.labels)
    if started is not None:
        body["experiment"] = job.experiment
    if state == SUCCEEDED and job.model_name is not None:
        body["tunedModel"] = {"model": job.model_name, "endpoint": job.endpoint_name}
    if job.dataset_processed(now):
        body["tuningDataStats"] = {"supervisedTuningDataStats": _data_stats(job)}
    if request.service_account:
        body["serviceAccount"] = request.service_account
    if beta:
        if sub_state is not None:
            body["tuningJobState"] = _enum(sub_state, TUNING_JOB_STATE_NUMBERS, int_enums)
        metadata: dict[str, Any] = {}
        epochs = job.completed_epochs(now)
        steps = job.completed_steps(now)
        if epochs:
            metadata["completedEpochCount"] = str(epochs)
        if steps:
            metadata["completedStepCount"] = str(steps)
        if metadata:
            body["tuningJobMetadata"] = metadata
    return body


def _data_stats(job: TuningJob) -> dict[str, Any]:
    """What dataset processing found: counts as int64 strings. Billable tokens are the dataset's estimated
    tokens times the epochs."""
    training = job.request.training
    return {
        "tuningDatasetExampleCount": str(len(training.examples)),
        "totalTuningCharacterCount": str(training.characters),
        "totalBillableTokenCount": str(training.tokens * job.request.epoch_count),
        "tuningStepCount": str(job.tuning_steps),
    }
