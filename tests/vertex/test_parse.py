"""Service JSON to typed values, and the spec to JSON: strict where a decision depends on it, tolerant of
what proto3 JSON leaves out or spells as strings; errors of Cloud Storage's shape typed by HTTP code."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tunekeeper.backends.googleapi.errors import (
    FailedPrecondition,
    InvalidArgument,
    MalformedResponse,
    NotFound,
    PermanentError,
    TransientError,
    error_from_response,
    refine_precondition,
)
from tunekeeper.backends.vertex.parse import parse_endpoint, parse_operation, parse_tuning_job
from tunekeeper.backends.vertex.types import AdapterSize, JobState, TuningJobSpec, TuningSubState

NAME = "projects/p/locations/us-central1/tuningJobs/123"


def job(**fields: Any) -> dict[str, Any]:
    return {"name": NAME, "state": "JOB_STATE_RUNNING", **fields}


def test_int64_fields_as_strings_and_numbers() -> None:
    parsed = parse_tuning_job(
        job(
            tuningJobMetadata={"completedStepCount": "7", "completedEpochCount": 1},
            tuningDataStats={"supervisedTuningDataStats": {"tuningStepCount": "20"}},
            supervisedTuningSpec={"hyperParameters": {"epochCount": "3"}},
            tuningJobState="TUNING_JOB_STATE_TUNING",
            createTime="2026-01-02T03:04:05.123456789Z",
        )
    )
    assert (parsed.completed_steps, parsed.total_steps, parsed.completed_epochs, parsed.epoch_count) == (7, 20, 1, 3)
    assert parsed.sub_state is TuningSubState.TUNING
    assert parsed.create_time is not None and parsed.create_time.tzinfo is not None


def test_what_proto3_leaves_out_reads_as_not_reported() -> None:
    parsed = parse_tuning_job(job())
    assert parsed.state is JobState.RUNNING
    assert (parsed.sub_state, parsed.completed_steps, parsed.total_steps, parsed.tuned_model, parsed.error) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert dict(parsed.labels) == {}


def test_a_failed_job_carries_its_status() -> None:
    parsed = parse_tuning_job(job(state="JOB_STATE_FAILED", error={"code": 13, "message": "internal"}))
    assert parsed.state.ended
    assert parsed.error is not None and (parsed.error.code, parsed.error.message) == (13, "internal")


def test_an_unknown_sub_state_is_unspecified_but_an_unknown_state_is_malformed() -> None:
    assert parse_tuning_job(job(tuningJobState="TUNING_JOB_STATE_NEW")).sub_state is TuningSubState.UNSPECIFIED
    with pytest.raises(MalformedResponse, match="state"):
        parse_tuning_job(job(state="JOB_STATE_NEW"))


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"state": "JOB_STATE_RUNNING"},
        job(state=3),  # integer enums are never asked for
        job(labels={"a": 1}),
        job(tuningJobMetadata={"completedStepCount": "seven"}),
        job(createTime="yesterday"),
        job(tunedModel="projects/p/locations/l/models/1"),
    ],
)
def test_malformed_jobs_raise_malformed_response(document: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_tuning_job(document)


def test_endpoint_and_operation() -> None:
    endpoint = parse_endpoint(
        {"name": "projects/p/locations/l/endpoints/9", "deployedModels": [{"id": "55", "model": "m"}]}
    )
    assert endpoint.deployed_model_ids == ("55",)
    assert parse_endpoint({"name": "projects/p/locations/l/endpoints/9"}).deployed_model_ids == ()
    operation = parse_operation({"name": "op", "done": True, "error": {"code": 9, "message": "no"}})
    assert operation.done and operation.error is not None and operation.error.code == 9
    with pytest.raises(MalformedResponse):
        parse_operation({"name": "op", "done": "yes"})


def test_spec_to_json_is_camel_case_and_leaves_out_what_is_unset() -> None:
    full = TuningJobSpec(
        base_model="gemini-2.5-flash",
        display_name="numbers",
        training_uri="gs://b/train.jsonl",
        validation_uri="gs://b/validation.jsonl",
        epoch_count=3,
        learning_rate_multiplier=0.5,
        adapter_size=AdapterSize.EIGHT,
        labels={"tunekeeper-job": "42"},
        description="d",
    )
    assert full.to_json() == {
        "baseModel": "gemini-2.5-flash",
        "tunedModelDisplayName": "numbers",
        "description": "d",
        "labels": {"tunekeeper-job": "42"},
        "supervisedTuningSpec": {
            "trainingDatasetUri": "gs://b/train.jsonl",
            "validationDatasetUri": "gs://b/validation.jsonl",
            "hyperParameters": {"epochCount": 3, "learningRateMultiplier": 0.5, "adapterSize": "ADAPTER_SIZE_EIGHT"},
        },
    }
    bare = TuningJobSpec(base_model="gemini-2.5-flash", display_name="", training_uri="gs://b/t")
    assert bare.to_json() == {
        "baseModel": "gemini-2.5-flash",
        "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/t"},
    }
    json.dumps(full.to_json())  # plain JSON, labels included


@pytest.mark.parametrize(
    "labels",
    [
        {"Upper": "x"},
        {"1starts-with-digit": "x"},
        {"k": "Value"},
        {"k" * 64: "x"},
        {"k": "v" * 64},
        {"k": "a b"},
        {f"k{n}": "v" for n in range(65)},
    ],
)
def test_labels_the_service_would_refuse_are_refused_here(labels: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="label"):
        TuningJobSpec(base_model="m", display_name="d", training_uri="gs://b/t", labels=labels)


def test_labels_at_the_limits_are_fine_and_frozen() -> None:
    spec = TuningJobSpec(
        base_model="m", display_name="d", training_uri="gs://b/t", labels={"k" * 63: "v" * 63, "e": ""}
    )
    with pytest.raises(TypeError):
        spec.labels["x"] = "y"  # type: ignore[index]


@pytest.mark.parametrize(
    "overrides",
    [
        {"training_uri": "/local/file"},
        {"epoch_count": 0},
        {"learning_rate_multiplier": 0.0},
        {"display_name": "x" * 129},
    ],
)
def test_other_spec_mistakes_are_refused(overrides: dict[str, Any]) -> None:
    settings: dict[str, Any] = {"base_model": "m", "display_name": "d", "training_uri": "gs://b/t", **overrides}
    with pytest.raises(ValueError, match=r"must|display_name"):
        TuningJobSpec(**settings)


def storage_error(code: int, message: str, reason: str) -> str:
    return json.dumps({"error": {"code": code, "message": message, "errors": [{"message": message, "reason": reason}]}})


@pytest.mark.parametrize(
    ("http", "expected", "status"),
    [
        (404, NotFound, "NOT_FOUND"),
        (400, InvalidArgument, "INVALID_ARGUMENT"),
        (412, PermanentError, "FAILED_PRECONDITION"),
        (429, TransientError, "RESOURCE_EXHAUSTED"),
        (503, TransientError, "UNAVAILABLE"),
    ],
)
def test_cloud_storage_errors_are_typed_by_http_code(http: int, expected: type[Exception], status: str) -> None:
    error = error_from_response(http, storage_error(http, "No such object: b/o", "notFound"))
    assert type(error) is expected
    assert (error.status, error.message) == (status, "No such object: b/o")


def test_failed_precondition_is_told_apart_only_when_asked() -> None:
    body = json.dumps({"error": {"code": 400, "status": "FAILED_PRECONDITION", "message": "ended"}})
    plain = error_from_response(400, body)
    assert type(plain) is InvalidArgument  # as the Gemini client has always seen it
    refined = refine_precondition(plain)
    assert type(refined) is FailedPrecondition
    assert (refined.http_status, refined.status, refined.message) == (400, "FAILED_PRECONDITION", "ended")
    other = error_from_response(400, json.dumps({"error": {"code": 400, "status": "INVALID_ARGUMENT"}}))
    assert refine_precondition(other) is other
