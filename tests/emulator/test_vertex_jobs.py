"""Vertex AI tuning jobs against a real emulator over HTTP: create and its checks, the life cycle, failures,
cancel, the concurrent-tuning quota in both modes, list filters and pages, per-label stats and bearer auth."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.emulator.conftest import call, make_config
from tests.waiting import wait_until
from tunekeeper.emulator import Emulator
from tunekeeper.emulator.oauth.tokens import CLOUD_PLATFORM_SCOPE
from tunekeeper.emulator.storage.objects import ObjectStore
from tunekeeper.emulator.vertex.deployments import Deployments
from tunekeeper.emulator.vertex.jobs import TuningJobStore
from tunekeeper.emulator.vertex.validation import parse_create

BUCKET = "tk-bucket"
PARENT = "projects/proj-1/locations/us-central1"
TRAIN_URI = f"gs://{BUCKET}/train.jsonl"
JOB_NAME = re.compile(rf"^{PARENT}/tuningJobs/\d{{19}}$")
ENDED = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}


def example_line(number: int) -> str:
    return json.dumps(
        {
            "contents": [
                {"role": "user", "parts": [{"text": f"question {number}"}]},
                {"role": "model", "parts": [{"text": f"answer {number}"}]},
            ]
        }
    )


def dataset(examples: int) -> bytes:
    return ("\n".join(example_line(number) for number in range(examples)) + "\n").encode()


def job_body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "baseModel": "gemini-2.5-flash",
        "tunedModelDisplayName": "numbers",
        "labels": {"tunekeeper-job": "42"},
        "supervisedTuningSpec": {"trainingDatasetUri": TRAIN_URI, "hyperParameters": {"epochCount": 2}},
    }
    body.update(extra)
    return body


def put(emu: Emulator, name: str, data: bytes) -> None:
    emu.state.storage.put(BUCKET, name, data, time.time())


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(make_config(buckets=frozenset({BUCKET}))) as emu:
        put(emu, "train.jsonl", dataset(16))
        yield emu


@pytest.fixture
async def session(emulator: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    token = emulator.state.tokens.issue("sa@example", frozenset({CLOUD_PLATFORM_SCOPE}), time.time())
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token.access_token}"}) as client:
        yield client


def jobs_url(emu: Emulator, version: str = "v1beta1") -> str:
    return f"{emu.base_url}/{version}/{PARENT}/tuningJobs"


async def create_job(
    session: aiohttp.ClientSession, emu: Emulator, body: dict[str, Any] | None = None, version: str = "v1beta1"
) -> dict[str, Any]:
    status, job = await call(session, "POST", jobs_url(emu, version), body or job_body())
    assert status == 200, job
    return dict(job)


async def get_job(session: aiohttp.ClientSession, emu: Emulator, name: str, version: str = "v1beta1") -> dict[str, Any]:
    status, job = await call(session, "GET", f"{emu.base_url}/{version}/{name}")
    assert status == 200, job
    return dict(job)


async def wait_state(
    session: aiohttp.ClientSession, emu: Emulator, name: str, states: set[str], version: str = "v1beta1"
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        job = await get_job(session, emu, name, version)
        return job if job["state"] in states else None

    return await wait_until(reached, within=10.0, message=f"{name} in {states}")


def violation(answer: dict[str, Any]) -> tuple[str, str]:
    details = answer["error"]["details"]
    field = details[0]["fieldViolations"][0]
    return field["field"], field["description"]


# -- create ----------------------------------------------------------------------------------------------------


async def test_create_answers_the_pending_job_with_a_numeric_name(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    job = await create_job(session, emulator)
    assert JOB_NAME.match(job["name"])
    assert job["state"] == "JOB_STATE_PENDING"
    assert job["baseModel"] == "gemini-2.5-flash"
    assert job["labels"] == {"tunekeeper-job": "42"}
    hyper = job["supervisedTuningSpec"]["hyperParameters"]
    assert hyper == {"epochCount": "2", "learningRateMultiplier": 1.0, "adapterSize": "ADAPTER_SIZE_FOUR"}
    assert job["supervisedTuningSpec"]["trainingDatasetUri"] == TRAIN_URI
    assert "endTime" not in job and "tunedModel" not in job
    again = await create_job(session, emulator)
    assert again["name"] != job["name"]


async def test_create_accepts_snake_case_int64_strings_and_the_publisher_form(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    body = {
        "base_model": "publishers/google/models/gemini-2.5-pro",
        "supervised_tuning_spec": {
            "training_dataset_uri": TRAIN_URI,
            "hyper_parameters": {
                "epoch_count": "3",
                "learning_rate_multiplier": "0.5",
                "adapter_size": "ADAPTER_SIZE_EIGHT",
            },
        },
    }
    job = await create_job(session, emulator, body, version="v1")
    assert job["baseModel"] == "publishers/google/models/gemini-2.5-pro"
    assert job["supervisedTuningSpec"]["hyperParameters"] == {
        "epochCount": "3",
        "learningRateMultiplier": 0.5,
        "adapterSize": "ADAPTER_SIZE_EIGHT",
    }


async def test_integer_enums_only_when_the_request_asks_for_them(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    body = job_body(supervisedTuningSpec={"trainingDatasetUri": TRAIN_URI, "hyperParameters": {"adapterSize": 3}})
    status, job = await call(session, "POST", jobs_url(emulator, "v1"), body, params={"$alt": "json;enum-encoding=int"})
    assert status == 200, job
    assert job["state"] == 2  # JOB_STATE_PENDING
    assert job["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] == 3  # ADAPTER_SIZE_EIGHT
    assert job["supervisedTuningSpec"]["hyperParameters"]["epochCount"] == "10"  # the default, as a string
    named = await get_job(session, emulator, job["name"], "v1")
    assert named["state"] in {"JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"}
    assert named["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] == "ADAPTER_SIZE_EIGHT"


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"baseModel": "gemini-9-ultra"}, "base_model", "not supported for tuning"),
        ({"tunedModelDisplayName": "x" * 129}, "tuned_model_display_name", "at most 128"),
        ({"labels": {"Job": "42"}}, "labels", "Label key"),
        ({"labels": {"job": "Forty Two"}}, "labels", "value of label"),
        (
            {
                "baseModel": "gemini-2.5-pro",
                "supervisedTuningSpec": {
                    "trainingDatasetUri": TRAIN_URI,
                    "hyperParameters": {"adapterSize": "ADAPTER_SIZE_SIXTEEN"},
                },
            },
            "supervised_tuning_spec.hyper_parameters.adapter_size",
            "at most ADAPTER_SIZE_EIGHT",
        ),
        (
            {"supervisedTuningSpec": {"trainingDatasetUri": TRAIN_URI, "hyperParameters": {"epochCount": 0}}},
            "supervised_tuning_spec.hyper_parameters.epoch_count",
            "must be positive",
        ),
        (
            {
                "supervisedTuningSpec": {
                    "trainingDatasetUri": TRAIN_URI,
                    "hyperParameters": {"learningRateMultiplier": -1},
                }
            },
            "supervised_tuning_spec.hyper_parameters.learning_rate_multiplier",
            "must be positive",
        ),
        (
            {"supervisedTuningSpec": {"trainingDatasetUri": f"gs://{BUCKET}/missing.jsonl"}},
            "supervised_tuning_spec.training_dataset_uri",
            "does not exist",
        ),
        (
            {"supervisedTuningSpec": {"trainingDatasetUri": "gs://no-such-bucket/train.jsonl"}},
            "supervised_tuning_spec.training_dataset_uri",
            "does not exist",
        ),
        ({"supervisedTuningSpec": {}}, "supervised_tuning_spec.training_dataset_uri", "required"),
        (
            {"supervisedTuningSpec": {"trainingDatasetUri": TRAIN_URI, "validationDatasetUri": "/local/file"}},
            "supervised_tuning_spec.validation_dataset_uri",
            "Cloud Storage URI",
        ),
        ({"preTunedModel": {"tunedModelName": "x"}}, "pre_tuned_model", "does not support"),
    ],
)
async def test_create_refuses_with_a_field_violation(
    emulator: Emulator, session: aiohttp.ClientSession, change: dict[str, Any], field: str, fragment: str
) -> None:
    status, answer = await call(session, "POST", jobs_url(emulator), job_body(**change))
    assert status == 400, answer
    assert answer["error"]["status"] == "INVALID_ARGUMENT"
    assert violation(answer) == (field, answer["error"]["message"])
    assert fragment in answer["error"]["message"]
    assert emulator.stats()["tuning_jobs"] == {}


async def test_an_unknown_field_is_rejected_like_json_transcoding(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    body = job_body()
    body["supervisedTuningSpec"]["hyperParameters"]["epochs"] = 3
    status, answer = await call(session, "POST", jobs_url(emulator), body)
    assert status == 400
    assert answer["error"]["message"] == (
        'Invalid JSON payload received. Unknown name "epochs" at '
        "'tuning_job.supervised_tuning_spec.hyper_parameters': Cannot find field."
    )
    # batchSize exists in v1beta1 only
    body = job_body(supervisedTuningSpec={"trainingDatasetUri": TRAIN_URI, "hyperParameters": {"batchSize": 4}})
    status, answer = await call(session, "POST", jobs_url(emulator, "v1"), body)
    assert status == 400
    assert 'Unknown name "batch_size"' in answer["error"]["message"]
    assert (await create_job(session, emulator, body, "v1beta1"))["supervisedTuningSpec"]["hyperParameters"][
        "batchSize"
    ] == "4"


SECRET = "s3cr3t-training-text"


@pytest.mark.parametrize(
    ("lines", "line_number", "fragment"),
    [
        ([example_line(0), "{not json " + SECRET], 2, "not valid JSON"),
        ([example_line(0), example_line(1), json.dumps([SECRET])], 3, "not a JSON object"),
        (
            [json.dumps({"contents": [{"role": "model", "parts": [{"text": SECRET}]}]})],
            1,
            'contents[0].role must be "user"',
        ),
        (
            [
                example_line(0),
                json.dumps(
                    {
                        "contents": [
                            {"role": "user", "parts": [{"text": SECRET}]},
                            {"role": "user", "parts": [{"text": "b"}]},
                        ]
                    }
                ),
            ],
            2,
            'contents[1].role must be "model"',
        ),
        ([json.dumps({"contents": [{"role": "user", "parts": [{"text": SECRET}]}]})], 1, "last turn must be the model"),
        ([json.dumps({"contents": []})], 1, "non-empty list"),
        (
            [
                json.dumps(
                    {
                        "contents": [
                            {"role": "user", "parts": [{"inlineData": SECRET}]},
                            {"role": "model", "parts": [{"text": "x"}]},
                        ]
                    }
                )
            ],
            1,
            "text part",
        ),
        ([json.dumps({"messages": [SECRET]})], 1, "unexpected field"),
    ],
)
async def test_a_bad_dataset_line_is_named_by_number_never_quoted(
    emulator: Emulator, session: aiohttp.ClientSession, lines: list[str], line_number: int, fragment: str
) -> None:
    put(emulator, "bad.jsonl", ("\n".join(lines) + "\n").encode())
    body = job_body(supervisedTuningSpec={"trainingDatasetUri": f"gs://{BUCKET}/bad.jsonl"})
    status, answer = await call(session, "POST", jobs_url(emulator), body)
    assert status == 400, answer
    field, description = violation(answer)
    assert field == "supervised_tuning_spec.training_dataset_uri"
    assert f"line {line_number}:" in description
    assert fragment in description
    assert SECRET not in json.dumps(answer)


async def test_the_validation_dataset_is_checked_too(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    put(emulator, "validation.jsonl", (example_line(0) + "\n[]\n").encode())
    spec = {"trainingDatasetUri": TRAIN_URI, "validationDatasetUri": f"gs://{BUCKET}/validation.jsonl"}
    status, answer = await call(session, "POST", jobs_url(emulator), job_body(supervisedTuningSpec=spec))
    assert status == 400
    field, description = violation(answer)
    assert field == "supervised_tuning_spec.validation_dataset_uri"
    assert "line 2:" in description
    put(emulator, "validation.jsonl", dataset(5_001))
    status, answer = await call(session, "POST", jobs_url(emulator), job_body(supervisedTuningSpec=spec))
    assert status == 400
    assert "5001 examples, more than the 5000 allowed" in answer["error"]["message"]
    put(emulator, "validation.jsonl", dataset(3))
    job = await create_job(session, emulator, job_body(supervisedTuningSpec=spec))
    assert job["supervisedTuningSpec"]["validationDatasetUri"] == spec["validationDatasetUri"]


# -- the life cycle --------------------------------------------------------------------------------------------


def _order(job: dict[str, Any]) -> tuple[int, int]:
    states = ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    sub_states = [
        None,
        "TUNING_JOB_STATE_PROCESSING_DATASET",
        "TUNING_JOB_STATE_TUNING",
        "TUNING_JOB_STATE_POST_PROCESSING",
    ]
    return states.index(job["state"]), sub_states.index(job.get("tuningJobState"))


async def test_a_job_runs_to_success_and_reports_its_model(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    job = await create_job(session, emulator)
    seen: list[tuple[int, int]] = []
    steps_seen: list[int] = []

    async def succeeded() -> dict[str, Any] | None:
        current = await get_job(session, emulator, job["name"])
        seen.append(_order(current))
        steps_seen.append(int(current.get("tuningJobMetadata", {}).get("completedStepCount", "0")))
        return current if current["state"] == "JOB_STATE_SUCCEEDED" else None

    done = await wait_until(succeeded, within=10.0, interval=0.002, message="succeeded")
    assert seen == sorted(seen), "states only move forward"
    assert steps_seen == sorted(steps_seen), "progress only grows"
    # 16 examples, 2 epochs, batch size 8: 4 steps.
    assert done["tuningJobMetadata"] == {"completedEpochCount": "2", "completedStepCount": "4"}
    assert done["tuningDataStats"]["supervisedTuningDataStats"] == {
        "tuningDatasetExampleCount": "16",
        "totalTuningCharacterCount": str(sum(len(f"question {n}answer {n}") for n in range(16))),
        "totalBillableTokenCount": str(2 * sum(-(-len(f"question {n}answer {n}") // 4) for n in range(16))),
        "tuningStepCount": "4",
    }
    assert "tuningJobState" not in done and "error" not in done
    assert done["createTime"] <= done["startTime"] <= done["endTime"] == done["updateTime"]
    job_id = done["name"].rsplit("/", 1)[1]
    assert done["experiment"] == f"{PARENT}/metadataStores/default/contexts/tuning-experiment-{job_id}"
    model, endpoint = done["tunedModel"]["model"], done["tunedModel"]["endpoint"]
    assert re.fullmatch(rf"{PARENT}/models/\d{{19}}@1", model)
    assert re.fullmatch(rf"{PARENT}/endpoints/\d{{19}}", endpoint)
    deployed = emulator.state.deployments.model(model)
    assert deployed.tuning_job == done["name"]
    assert deployed.examples[3] == ("question 3", "answer 3")
    assert deployed.labels == {"tunekeeper-job": "42"}
    # Later reads report the same model: the job deployed once.
    assert (await get_job(session, emulator, done["name"]))["tunedModel"] == done["tunedModel"]
    assert len(emulator.state.deployments.models()) == 1
    # /v1/ has no v1beta1 sub-state or metadata.
    v1 = await get_job(session, emulator, done["name"], "v1")
    assert "tuningJobMetadata" not in v1 and v1["tunedModel"] == done["tunedModel"]
    timeline = emulator.stats()["tuning_jobs"][done["name"]]
    assert timeline["state"] == "JOB_STATE_SUCCEEDED"
    assert timeline["gets"] == len(seen) + 2
    assert timeline["created_at"] < timeline["done_at"]


def _store_with_job(now: float, step: float = 1.0) -> tuple[TuningJobStore, Any]:
    """A store driven by explicit times: every phase can be looked at exactly."""

    class Settings:
        step_seconds = step
        fail_rate = 0.0
        max_active_tuning: int | None = None

    storage = ObjectStore(frozenset({BUCKET}))
    storage.put(BUCKET, "train.jsonl", dataset(16), now)
    request = parse_create(job_body(), "v1beta1", storage, frozenset({"gemini-2.5-flash"}))
    store = TuningJobStore(0, Settings(), "reject", Deployments(0))
    return store, store.create(PARENT, request, now)


def test_each_phase_at_its_time() -> None:
    t0 = 1_000.0
    store, job = _store_with_job(t0)
    expected = [
        (0.5, "JOB_STATE_PENDING", None, 0, 0),
        (1.5, "JOB_STATE_RUNNING", "TUNING_JOB_STATE_PROCESSING_DATASET", 0, 0),
        (3.5, "JOB_STATE_RUNNING", "TUNING_JOB_STATE_TUNING", 1, 0),
        (4.5, "JOB_STATE_RUNNING", "TUNING_JOB_STATE_TUNING", 2, 1),
        (6.5, "JOB_STATE_RUNNING", "TUNING_JOB_STATE_POST_PROCESSING", 4, 2),
        (7.0, "JOB_STATE_SUCCEEDED", None, 4, 2),
    ]
    for offset, state, sub_state, steps, epochs in expected:
        now = t0 + offset
        store.advance(now)
        assert job.state(now) == (state, sub_state), offset
        assert (job.completed_steps(now), job.completed_epochs(now)) == (steps, epochs), offset
    assert job.start_time(t0 + 7.0) == t0 + 1.0
    assert job.end_time(t0 + 7.0) == t0 + 7.0
    assert job.model_name is not None


def test_cancel_holds_cancelling_for_one_step_and_a_new_speed_applies() -> None:
    t0 = 1_000.0
    store, job = _store_with_job(t0)
    store.cancel(job.name, t0 + 3.2)
    assert job.state(t0 + 3.3) == ("JOB_STATE_CANCELLING", None)
    assert store.counts(t0 + 3.3) == (1, 0)  # a cancelling job still holds its slot
    store.rescale(0.1, t0 + 3.7)  # half a step of cancelling left: 0.05 s at the new speed
    assert job.state(t0 + 3.74) == ("JOB_STATE_CANCELLING", None)
    assert job.state(t0 + 3.76) == ("JOB_STATE_CANCELLED", None)
    assert store.counts(t0 + 3.76) == (0, 0)
    assert job.completed_steps(t0 + 10.0) == 1  # progress froze at the cancel
    assert job.model_name is None


async def test_fail_rate_ends_jobs_failed(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.configure(fail_rate=1.0)
    job = await create_job(session, emulator)
    failed = await wait_state(session, emulator, job["name"], ENDED)
    assert failed["state"] == "JOB_STATE_FAILED"
    assert failed["error"]["code"] == 13 and failed["error"]["message"]
    assert "tunedModel" not in failed
    assert int(failed.get("tuningJobMetadata", {}).get("completedStepCount", "0")) < 4
    assert emulator.state.deployments.models() == []


async def test_cancel_goes_through_cancelling_to_cancelled(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.configure(step_seconds=60.0)
    job = await create_job(session, emulator)
    status, answer = await call(session, "POST", f"{emulator.base_url}/v1/{job['name']}:cancel")
    assert (status, answer) == (200, {})
    cancelling = await get_job(session, emulator, job["name"])
    assert cancelling["state"] == "JOB_STATE_CANCELLING"
    assert "error" not in cancelling
    status, answer = await call(session, "POST", f"{emulator.base_url}/v1/{job['name']}:cancel")
    assert (status, answer) == (200, {})  # a second cancel while cancelling changes nothing
    emulator.configure(step_seconds=0.001)
    cancelled = await wait_state(session, emulator, job["name"], ENDED)
    assert cancelled["state"] == "JOB_STATE_CANCELLED"
    assert cancelled["error"]["code"] == 1
    assert "endTime" in cancelled and "tunedModel" not in cancelled
    status, answer = await call(session, "POST", f"{emulator.base_url}/v1beta1/{job['name']}:cancel")
    assert status == 400
    assert answer["error"]["status"] == "FAILED_PRECONDITION"
    assert answer["error"]["message"] == (
        f"Cannot cancel tuning job {job['name']} because it is in state JOB_STATE_CANCELLED."
    )


async def test_unknown_job_is_404(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    name = f"{PARENT}/tuningJobs/1234567890123456789"
    status, answer = await call(session, "GET", f"{emulator.base_url}/v1/{name}")
    assert status == 404
    assert answer["error"]["message"] == f"TuningJob {name} does not exist."
    status, answer = await call(session, "POST", f"{emulator.base_url}/v1/{name}:cancel")
    assert status == 404


# -- quota -----------------------------------------------------------------------------------------------------


async def test_quota_reject_mode_answers_429_until_a_slot_frees(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    emulator.configure(max_active_tuning=1, step_seconds=60.0)
    first = await create_job(session, emulator)
    status, answer = await call(session, "POST", jobs_url(emulator), job_body())
    assert status == 429
    assert answer["error"]["status"] == "RESOURCE_EXHAUSTED"
    detail = answer["error"]["details"][0]
    assert detail["@type"] == "type.googleapis.com/google.rpc.QuotaFailure"
    assert detail["violations"][0]["quotaMetric"].startswith("aiplatform.googleapis.com/")
    # Gemini API models are a separate pool: the Vertex job does not use up its quota.
    assert emulator.stats()["current_vertex_tuning"] == 1 and emulator.stats()["current_tuning"] == 0
    emulator.configure(step_seconds=0.001)
    await wait_state(session, emulator, first["name"], ENDED)
    await create_job(session, emulator)


async def test_quota_wait_mode_queues_jobs_in_creation_order() -> None:
    config = make_config(buckets=frozenset({BUCKET}), quota_mode="wait", max_active_tuning=1, step_seconds=60.0)
    async with Emulator(config) as emu:
        put(emu, "train.jsonl", dataset(16))
        token = emu.state.tokens.issue("sa@example", frozenset({CLOUD_PLATFORM_SCOPE}), time.time())
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token.access_token}"}) as session:
            first = await create_job(session, emu)
            second = await create_job(session, emu)
            third = await create_job(session, emu)
            assert first.get("tuningJobState") is None
            for waiting in (second, third):
                assert waiting["state"] == "JOB_STATE_PENDING"
                assert waiting["tuningJobState"] == "TUNING_JOB_STATE_WAITING_FOR_QUOTA"
            assert (emu.stats()["current_vertex_tuning"], emu.stats()["waiting_vertex_tuning"]) == (1, 2)
            v1 = await get_job(session, emu, second["name"], "v1")
            assert "tuningJobState" not in v1 and v1["state"] == "JOB_STATE_PENDING"
            emu.configure(step_seconds=0.001)
            ended = [await wait_state(session, emu, job["name"], ENDED) for job in (first, second, third)]
            assert [job["state"] for job in ended] == ["JOB_STATE_SUCCEEDED"] * 3
            # Each waiting job got the slot when the one before it ended, and its clock started then.
            for before, after in itertools.pairwise(ended):
                assert after["createTime"] < before["endTime"] < after["startTime"]
            stats = emu.stats()
            assert stats["max_concurrent_vertex_tuning"] == 1
            assert (stats["current_vertex_tuning"], stats["waiting_vertex_tuning"]) == (0, 0)


async def test_a_raised_limit_starts_waiting_jobs() -> None:
    config = make_config(buckets=frozenset({BUCKET}), quota_mode="wait", max_active_tuning=1, step_seconds=60.0)
    async with Emulator(config) as emu:
        put(emu, "train.jsonl", dataset(16))
        token = emu.state.tokens.issue("sa@example", frozenset({CLOUD_PLATFORM_SCOPE}), time.time())
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token.access_token}"}) as session:
            await create_job(session, emu)
            second = await create_job(session, emu)
            status, _ = await call(session, "POST", f"{emu.base_url}/v1/{second['name']}:cancel")
            assert status == 200
            third = await create_job(session, emu)
            assert third["tuningJobState"] == "TUNING_JOB_STATE_WAITING_FOR_QUOTA"
            emu.configure(max_active_tuning=2)
            started = await get_job(session, emu, third["name"])
            assert started["state"] == "JOB_STATE_PENDING" and "tuningJobState" not in started
            assert emu.stats()["current_vertex_tuning"] == 2


# -- list ------------------------------------------------------------------------------------------------------


async def list_page(session: aiohttp.ClientSession, emu: Emulator, **params: str) -> tuple[int, dict[str, Any]]:
    status, answer = await call(session, "GET", jobs_url(emu), params=params)
    return status, dict(answer)


async def test_list_filters(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.configure(step_seconds=60.0)
    jobs = [
        await create_job(session, emulator, job_body(labels={"tunekeeper-job": str(number), "team": "a"}))
        for number in range(3)
    ]
    status, cancel = await call(session, "POST", f"{emulator.base_url}/v1/{jobs[0]['name']}:cancel")
    assert status == 200, cancel

    async def names(filter_text: str) -> list[str]:
        status, page = await list_page(session, emulator, filter=filter_text)
        assert status == 200, page
        return [job["name"] for job in page.get("tuningJobs", [])]

    all_names = [job["name"] for job in jobs]
    assert await names('labels.tunekeeper-job="1"') == [all_names[1]]
    assert await names("labels.tunekeeper-job=2 AND labels.team=a") == [all_names[2]]
    assert await names('labels.team!="a"') == []
    assert await names('state="JOB_STATE_CANCELLING"') == [all_names[0]]
    assert await names("state!=JOB_STATE_CANCELLING") == all_names[1:]
    assert await names(f'create_time>"{jobs[0]["createTime"]}"') == all_names[1:]
    assert await names(f'create_time<="{jobs[1]["createTime"]}" AND state="JOB_STATE_PENDING"') == [all_names[1]]
    assert await names('create_time>="2000-01-01T00:00:00+00:00"') == all_names
    # Another project's list is empty: `{}`.
    status, other = await call(
        session, "GET", f"{emulator.base_url}/v1/projects/other/locations/us-central1/tuningJobs"
    )
    assert (status, other) == (200, {})


@pytest.mark.parametrize(
    ("filter_text", "named"),
    [
        ('state="JOB_STATE_RUNNING" OR state="JOB_STATE_PENDING"', "OR state"),
        ('display_name="x"', "display_name"),
        ('state="RUNNING"', "RUNNING"),
        ('create_time>"yesterday"', "yesterday"),
        ('create_time>"2026-01-01T00:00:00"', "2026-01-01T00:00:00"),
        ('labels.a>"1"', 'labels.a>"1"'),
        ('state="JOB_STATE_RUNNING" and labels.a="1"', "and labels"),
        ("NOT state=JOB_STATE_RUNNING", "NOT state"),
    ],
)
async def test_an_unsupported_filter_is_400_naming_the_part(
    emulator: Emulator, session: aiohttp.ClientSession, filter_text: str, named: str
) -> None:
    status, answer = await list_page(session, emulator, filter=filter_text)
    assert status == 400, answer
    assert answer["error"]["status"] == "INVALID_ARGUMENT"
    assert named in answer["error"]["message"]
    assert violation(answer)[0] == "filter"


async def test_pages_stay_stable_while_jobs_are_created(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    present = [(await create_job(session, emulator))["name"] for _ in range(5)]
    served: list[str] = []
    token: str | None = None
    created_between: list[str] = []
    while True:
        params = {"pageSize": "2", **({"pageToken": token} if token else {})}
        status, page = await list_page(session, emulator, **params)
        assert status == 200, page
        served.extend(job["name"] for job in page.get("tuningJobs", []))
        token = page.get("nextPageToken")
        if token is None:
            break
        created_between.append((await create_job(session, emulator))["name"])
    assert len(served) == len(set(served)), "nothing served twice"
    assert served[: len(present)] == present, "nothing present throughout skipped, in creation order"
    assert set(served) <= set(present) | set(created_between)
    # A token is only good with the parameters that made it.
    status, first = await list_page(session, emulator, pageSize="2")
    status, answer = await list_page(session, emulator, pageSize="3", pageToken=first["nextPageToken"])
    assert status == 400
    assert "page_token" in answer["error"]["message"]


# -- stats and auth --------------------------------------------------------------------------------------------


async def test_creates_are_counted_per_label(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    await create_job(session, emulator)
    status, _ = await call(session, "POST", jobs_url(emulator), job_body(baseModel="gemini-0"))
    assert status == 400
    status, _ = await call(session, "POST", jobs_url(emulator), b'{"labels": {"tunekeeper-job": "42"')
    assert status == 400
    emulator.set_faults({"503": 1.0})
    status, _ = await call(session, "POST", jobs_url(emulator), job_body())
    assert status == 503
    emulator.set_faults({}, replace=True)
    creates = emulator.stats()["tuning_creates"]
    assert creates == {
        "attempted": 4,
        "accepted": 1,
        "by_label": {"tunekeeper-job=42": {"attempted": 3, "accepted": 1}},
    }
    emulator.reset()
    stats = emulator.stats()
    assert stats["tuning_jobs"] == {} and stats["tuning_creates"]["attempted"] == 0


async def test_every_route_demands_an_issued_token(emulator: Emulator) -> None:
    name = f"{PARENT}/tuningJobs/1234567890123456789"
    requests = [
        ("POST", jobs_url(emulator), job_body()),
        ("GET", jobs_url(emulator), None),
        ("GET", f"{emulator.base_url}/v1/{name}", None),
        ("POST", f"{emulator.base_url}/v1/{name}:cancel", None),
    ]
    for headers in ({}, {"Authorization": "Bearer ya29.not-issued-here"}):
        async with aiohttp.ClientSession(headers=headers) as anonymous:
            for method, url, body in requests:
                status, answer = await call(anonymous, method, url, body)
                assert status == 401, (method, url)
                assert answer["error"]["status"] == "UNAUTHENTICATED"
                assert "not-issued-here" not in json.dumps(answer)
    assert emulator.stats()["tuning_creates"]["attempted"] == 0
