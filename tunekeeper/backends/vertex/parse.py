"""Vertex AI and Cloud Storage JSON to typed values, defensively: anything unexpected raises MalformedResponse
(which the transport retries), never KeyError.

proto3 JSON leaves out fields that hold their default, so absent strings read as "" and absent counts as
None (not reported yet). int64 fields arrive as numbers or strings. Enums are names: this client never asks
for integer enums, so a number where a name belongs is malformed. Fields this client does not know are
ignored; names and states, without which nothing can be decided, must be present.
"""

from __future__ import annotations

from typing import Any

from tunekeeper.backends.googleapi import read
from tunekeeper.backends.googleapi.errors import MalformedResponse
from tunekeeper.backends.vertex.types import (
    DeployedModel,
    Endpoint,
    JobState,
    ObjectInfo,
    Operation,
    Status,
    TunedModelRef,
    TuningJob,
    TuningSubState,
)


def parse_tuning_job(data: object, where: str = "tuningJob") -> TuningJob:
    obj = read.mapping(data, where)
    metadata = read.optional_mapping(obj, "tuningJobMetadata", where)
    stats = read.optional_mapping(
        read.optional_mapping(obj, "tuningDataStats", where), "supervisedTuningDataStats", where
    )
    spec = read.optional_mapping(obj, "supervisedTuningSpec", where)
    hyper = read.optional_mapping(spec, "hyperParameters", f"{where}.supervisedTuningSpec")
    tuned = read.optional_mapping(obj, "tunedModel", where)
    return TuningJob(
        name=read.name(obj, where),
        state=_state(obj.get("state"), f"{where}.state"),
        sub_state=_sub_state(obj.get("tuningJobState"), f"{where}.tuningJobState"),
        base_model=read.string(obj, "baseModel", where),
        display_name=read.string(obj, "tunedModelDisplayName", where),
        labels=_labels(obj, where),
        create_time=read.timestamp(obj, "createTime", where),
        start_time=read.timestamp(obj, "startTime", where),
        end_time=read.timestamp(obj, "endTime", where),
        update_time=read.timestamp(obj, "updateTime", where),
        completed_steps=read.optional_int(metadata, "completedStepCount", f"{where}.tuningJobMetadata"),
        total_steps=read.optional_int(stats, "tuningStepCount", f"{where}.tuningDataStats.supervisedTuningDataStats"),
        completed_epochs=read.optional_int(metadata, "completedEpochCount", f"{where}.tuningJobMetadata"),
        epoch_count=read.optional_int(hyper, "epochCount", f"{where}.supervisedTuningSpec.hyperParameters"),
        tuned_model=_tuned_model(tuned, f"{where}.tunedModel") if tuned else None,
        error=_status(obj["error"], f"{where}.error") if obj.get("error") is not None else None,
        experiment=read.string(obj, "experiment", where) or None,
    )


def parse_tuning_job_page(data: object) -> tuple[list[TuningJob], str | None]:
    """One page of tuningJobs.list and the token of the next page (None on the last)."""
    where = "listTuningJobsResponse"
    obj = read.mapping(data, where)
    items = read.items(obj, "tuningJobs", where)
    jobs = [parse_tuning_job(item, f"tuningJobs[{index}]") for index, item in enumerate(items)]
    return jobs, read.string(obj, "nextPageToken", where) or None


def parse_endpoint(data: object, where: str = "endpoint") -> Endpoint:
    obj = read.mapping(data, where)
    deployed = []
    for index, item in enumerate(read.items(obj, "deployedModels", where)):
        at = f"{where}.deployedModels[{index}]"
        entry = read.mapping(item, at)
        model_id = read.string(entry, "id", at)
        if not model_id:
            raise MalformedResponse(f"{at}.id: missing")
        deployed.append(DeployedModel(id=model_id, model=read.string(entry, "model", at)))
    return Endpoint(
        name=read.name(obj, where), display_name=read.string(obj, "displayName", where), deployed_models=tuple(deployed)
    )


def parse_operation(data: object, where: str = "operation") -> Operation:
    obj = read.mapping(data, where)
    done = obj.get("done", False)
    if not isinstance(done, bool):
        raise MalformedResponse(f"{where}.done: expected true or false, got {read.kind(done)}")
    error = _status(obj["error"], f"{where}.error") if obj.get("error") is not None else None
    return Operation(name=read.name(obj, where), done=done, error=error)


def parse_generated_text(data: object) -> str:
    """The first candidate's text, joined over its parts; "" when there is none (e.g. a blocked prompt)."""
    where = "generateContentResponse"
    candidates = read.items(read.mapping(data, where), "candidates", where)
    if not candidates:
        return ""
    candidate = read.mapping(candidates[0], "candidates[0]")
    parts = read.items(read.optional_mapping(candidate, "content", "candidates[0]"), "parts", "candidates[0].content")
    texts = []
    for index, part in enumerate(parts):
        at = f"candidates[0].content.parts[{index}]"
        texts.append(read.string(read.mapping(part, at), "text", at))
    return "".join(texts)


def parse_object_info(data: object, where: str = "object") -> ObjectInfo:
    obj = read.mapping(data, where)
    bucket = read.string(obj, "bucket", where)
    if not bucket:
        raise MalformedResponse(f"{where}.bucket: missing")
    size = read.optional_int(obj, "size", where)
    generation = read.optional_int(obj, "generation", where)
    if size is None or generation is None:
        raise MalformedResponse(f"{where}: size and generation are required")
    return ObjectInfo(
        bucket=bucket,
        name=read.name(obj, where),
        size=size,
        generation=generation,
        content_type=read.string(obj, "contentType", where),
        md5_hash=read.string(obj, "md5Hash", where),
        crc32c=read.string(obj, "crc32c", where),
        updated=read.timestamp(obj, "updated", where),
    )


def _tuned_model(obj: dict[str, Any], where: str) -> TunedModelRef:
    return TunedModelRef(model=read.string(obj, "model", where), endpoint=read.string(obj, "endpoint", where))


def _status(value: object, where: str) -> Status:
    obj = read.mapping(value, where)
    return Status(code=read.optional_int(obj, "code", where) or 0, message=read.string(obj, "message", where))


def _state(value: object, where: str) -> JobState:
    # Strict: a state this client does not know cannot be acted on, and must not read as "still running".
    if isinstance(value, str):
        try:
            return JobState(value)
        except ValueError:
            pass
    raise MalformedResponse(f"{where}: expected a JOB_STATE_* name, got {read.short(value)}")


def _sub_state(value: object, where: str) -> TuningSubState | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedResponse(f"{where}: expected a TUNING_JOB_STATE_* name, got {read.short(value)}")
    try:
        return TuningSubState(value)
    except ValueError:
        return TuningSubState.UNSPECIFIED  # informational only: a new sub-state must not fail the job's read


def _labels(obj: dict[str, Any], where: str) -> dict[str, str]:
    labels = read.optional_mapping(obj, "labels", where)
    for key, value in labels.items():
        if not isinstance(value, str):
            raise MalformedResponse(f"{where}.labels.{key}: expected a string, got {read.kind(value)}")
    return labels
