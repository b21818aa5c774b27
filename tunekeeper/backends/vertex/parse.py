"""Vertex AI and Cloud Storage JSON to typed values, defensively: anything unexpected raises MalformedResponse
(which the transport retries), never KeyError.

proto3 JSON leaves out fields that hold their default, so absent strings read as "" and absent counts as
None (not reported yet). int64 fields arrive as numbers or strings. Enums are names: this client never asks
for integer enums, so a number where a name belongs is malformed. Fields this client does not know are
ignored; names and states, without which nothing can be decided, must be present.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
    obj = _object(data, where)
    metadata = _optional_object(obj, "tuningJobMetadata", where)
    stats = _optional_object(_optional_object(obj, "tuningDataStats", where), "supervisedTuningDataStats", where)
    spec = _optional_object(obj, "supervisedTuningSpec", where)
    hyper = _optional_object(spec, "hyperParameters", f"{where}.supervisedTuningSpec")
    tuned = _optional_object(obj, "tunedModel", where)
    return TuningJob(
        name=_name(obj, where),
        state=_state(obj.get("state"), f"{where}.state"),
        sub_state=_sub_state(obj.get("tuningJobState"), f"{where}.tuningJobState"),
        base_model=_string(obj, "baseModel", where),
        display_name=_string(obj, "tunedModelDisplayName", where),
        labels=_labels(obj, where),
        create_time=_timestamp(obj, "createTime", where),
        start_time=_timestamp(obj, "startTime", where),
        end_time=_timestamp(obj, "endTime", where),
        update_time=_timestamp(obj, "updateTime", where),
        completed_steps=_optional_int(metadata, "completedStepCount", f"{where}.tuningJobMetadata"),
        total_steps=_optional_int(stats, "tuningStepCount", f"{where}.tuningDataStats.supervisedTuningDataStats"),
        completed_epochs=_optional_int(metadata, "completedEpochCount", f"{where}.tuningJobMetadata"),
        epoch_count=_optional_int(hyper, "epochCount", f"{where}.supervisedTuningSpec.hyperParameters"),
        tuned_model=_tuned_model(tuned, f"{where}.tunedModel") if tuned else None,
        error=_status(obj["error"], f"{where}.error") if obj.get("error") is not None else None,
        experiment=_string(obj, "experiment", where) or None,
    )


def parse_tuning_job_page(data: object) -> tuple[list[TuningJob], str | None]:
    """One page of tuningJobs.list and the token of the next page (None on the last)."""
    where = "listTuningJobsResponse"
    obj = _object(data, where)
    items = _list(obj, "tuningJobs", where)
    jobs = [parse_tuning_job(item, f"tuningJobs[{index}]") for index, item in enumerate(items)]
    return jobs, _string(obj, "nextPageToken", where) or None


def parse_endpoint(data: object, where: str = "endpoint") -> Endpoint:
    obj = _object(data, where)
    deployed = []
    for index, item in enumerate(_list(obj, "deployedModels", where)):
        at = f"{where}.deployedModels[{index}]"
        entry = _object(item, at)
        model_id = _string(entry, "id", at)
        if not model_id:
            raise MalformedResponse(f"{at}.id: missing")
        deployed.append(DeployedModel(id=model_id, model=_string(entry, "model", at)))
    return Endpoint(
        name=_name(obj, where), display_name=_string(obj, "displayName", where), deployed_models=tuple(deployed)
    )


def parse_operation(data: object, where: str = "operation") -> Operation:
    obj = _object(data, where)
    done = obj.get("done", False)
    if not isinstance(done, bool):
        raise MalformedResponse(f"{where}.done: expected true or false, got {_kind(done)}")
    error = _status(obj["error"], f"{where}.error") if obj.get("error") is not None else None
    return Operation(name=_name(obj, where), done=done, error=error)


def parse_generated_text(data: object) -> str:
    """The first candidate's text, joined over its parts; "" when there is none (e.g. a blocked prompt)."""
    where = "generateContentResponse"
    candidates = _list(_object(data, where), "candidates", where)
    if not candidates:
        return ""
    candidate = _object(candidates[0], "candidates[0]")
    parts = _list(_optional_object(candidate, "content", "candidates[0]"), "parts", "candidates[0].content")
    texts = []
    for index, part in enumerate(parts):
        at = f"candidates[0].content.parts[{index}]"
        texts.append(_string(_object(part, at), "text", at))
    return "".join(texts)


def parse_empty(data: object, where: str) -> None:
    """Answers that carry nothing (cancel, an object's delete): an object, and not one that carries an error,
    which would mean nothing was done although the status said success."""
    obj = _object(data, where)
    if "error" in obj:
        raise MalformedResponse(f"{where}: a success status with an error in the body")


def parse_object_info(data: object, where: str = "object") -> ObjectInfo:
    obj = _object(data, where)
    bucket = _string(obj, "bucket", where)
    if not bucket:
        raise MalformedResponse(f"{where}.bucket: missing")
    size = _optional_int(obj, "size", where)
    generation = _optional_int(obj, "generation", where)
    if size is None or generation is None:
        raise MalformedResponse(f"{where}: size and generation are required")
    return ObjectInfo(
        bucket=bucket,
        name=_name(obj, where),
        size=size,
        generation=generation,
        content_type=_string(obj, "contentType", where),
        md5_hash=_string(obj, "md5Hash", where),
        crc32c=_string(obj, "crc32c", where),
        updated=_timestamp(obj, "updated", where),
    )


def _tuned_model(obj: dict[str, Any], where: str) -> TunedModelRef:
    return TunedModelRef(model=_string(obj, "model", where), endpoint=_string(obj, "endpoint", where))


def _status(value: object, where: str) -> Status:
    obj = _object(value, where)
    return Status(code=_optional_int(obj, "code", where) or 0, message=_string(obj, "message", where))


def _state(value: object, where: str) -> JobState:
    # Strict: a state this client does not know cannot be acted on, and must not read as "still running".
    if isinstance(value, str):
        try:
            return JobState(value)
        except ValueError:
            pass
    raise MalformedResponse(f"{where}: expected a JOB_STATE_* name, got {_short(value)}")


def _sub_state(value: object, where: str) -> TuningSubState | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedResponse(f"{where}: expected a TUNING_JOB_STATE_* name, got {_short(value)}")
    try:
        return TuningSubState(value)
    except ValueError:
        return TuningSubState.UNSPECIFIED  # informational only: a new sub-state must not fail the job's read


def _labels(obj: dict[str, Any], where: str) -> dict[str, str]:
    labels = _optional_object(obj, "labels", where)
    for key, value in labels.items():
        if not isinstance(value, str):
            raise MalformedResponse(f"{where}.labels.{key}: expected a string, got {_kind(value)}")
    return labels


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedResponse(f"{where}: expected a JSON object, got {_kind(value)}")
    return value


def _optional_object(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    return {} if value is None else _object(value, f"{where}.{key}")


def _list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedResponse(f"{where}.{key}: expected a list, got {_kind(value)}")
    return value


def _name(obj: dict[str, Any], where: str) -> str:
    name = _string(obj, "name", where)
    if not name:
        raise MalformedResponse(f"{where}.name: missing")
    return name


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedResponse(f"{where}.{key}: expected a string, got {_kind(value)}")
    return value


def _optional_int(obj: dict[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise MalformedResponse(f"{where}.{key}: expected an integer, got {_kind(value)}")


def _timestamp(obj: dict[str, Any], key: str, where: str) -> datetime | None:
    text = _string(obj, key, where)
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedResponse(f"{where}.{key}: not an RFC 3339 timestamp: {text[:40]!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
