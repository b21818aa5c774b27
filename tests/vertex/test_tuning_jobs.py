"""Tuning jobs through the client, against the emulator: create, follow to the end, list by label across
pages, cancel, and the typed errors of each."""

from __future__ import annotations

import pytest

from tests.vertex.conftest import BUCKET, LOCATION, PROJECT, ClientFactory
from tests.waiting import wait_until
from tunekeeper.backends.googleapi.errors import FailedPrecondition, InvalidArgument, NotFound
from tunekeeper.backends.vertex.client import VertexClient
from tunekeeper.backends.vertex.types import AdapterSize, JobState, TuningJob, TuningJobSpec, TuningSubState
from tunekeeper.emulator import Emulator

PARENT = f"projects/{PROJECT}/locations/{LOCATION}"


def spec(training_uri: str, **overrides: object) -> TuningJobSpec:
    settings: dict[str, object] = {
        "base_model": "gemini-2.5-flash",
        "display_name": "numbers",
        "training_uri": training_uri,
        "epoch_count": 2,
        "adapter_size": AdapterSize.FOUR,
        "labels": {"tunekeeper-job": "42"},
        "description": "a test",
    }
    settings.update(overrides)
    return TuningJobSpec(**settings)  # type: ignore[arg-type]


async def until_ended(client: VertexClient, name: str, seen: list[TuningJob] | None = None) -> TuningJob:
    async def ended() -> TuningJob | None:
        job = await client.get_tuning_job(name)
        if seen is not None:
            seen.append(job)
        return job if job.state.ended else None

    return await wait_until(ended, within=15, interval=0.005, message=f"{name} to end")


async def test_a_job_is_created_pending_and_followed_to_success(client: VertexClient, training_data: str) -> None:
    created = await client.create_tuning_job(spec(training_data))
    assert created.name.startswith(f"{PARENT}/tuningJobs/")
    assert created.state is JobState.PENDING
    assert dict(created.labels) == {"tunekeeper-job": "42"}
    assert (created.base_model, created.display_name, created.epoch_count) == ("gemini-2.5-flash", "numbers", 2)

    seen: list[TuningJob] = []
    job = await until_ended(client, created.name, seen)

    assert job.state is JobState.SUCCEEDED
    assert job.error is None
    # 16 examples, 2 epochs, batches of 8: 4 tuning steps, every one done.
    assert (job.total_steps, job.completed_steps, job.completed_epochs) == (4, 4, 2)
    assert job.tuned_model is not None
    assert job.tuned_model.model.startswith(f"{PARENT}/models/")
    assert job.tuned_model.endpoint.startswith(f"{PARENT}/endpoints/")
    assert job.experiment and "tuning-experiment-" in job.experiment
    assert job.create_time and job.start_time and job.end_time and job.create_time <= job.start_time <= job.end_time
    assert {observed.sub_state for observed in seen} <= {
        None,
        TuningSubState.PROCESSING_DATASET,
        TuningSubState.TUNING,
        TuningSubState.POST_PROCESSING,
    }


async def test_v1_reports_no_sub_state_and_no_step_progress(make_client: ClientFactory, training_data: str) -> None:
    async with make_client(api_version="v1") as client:
        created = await client.create_tuning_job(spec(training_data))
        job = await until_ended(client, created.name)
    assert job.state is JobState.SUCCEEDED
    assert (job.sub_state, job.completed_steps, job.completed_epochs) == (None, None, None)
    assert job.total_steps == 4  # tuningDataStats is in v1 too


async def test_list_by_label_follows_every_page(client: VertexClient, training_data: str, emulator: Emulator) -> None:
    mine = [await client.create_tuning_job(spec(training_data, labels={"batch": "a"})) for _ in range(3)]
    await client.create_tuning_job(spec(training_data, labels={"batch": "b"}))

    listed = [job async for job in client.list_tuning_jobs(filter='labels.batch="a"', page_size=1)]

    assert [job.name for job in listed] == [job.name for job in mine]
    assert emulator.stats()["requests"]["by_route"]["tuningJobs.list"] >= 3  # one page per job at least


async def test_an_unfiltered_list_has_every_job_of_the_parent(client: VertexClient, training_data: str) -> None:
    names = {(await client.create_tuning_job(spec(training_data))).name for _ in range(2)}
    assert {job.name async for job in client.list_tuning_jobs()} == names


async def test_a_filter_the_service_does_not_understand_is_invalid_argument(client: VertexClient) -> None:
    with pytest.raises(InvalidArgument):
        _ = [job async for job in client.list_tuning_jobs(filter='labels.a="x" OR labels.b="y"')]


async def test_cancel_ends_the_job_cancelled_and_a_second_cancel_is_failed_precondition(
    client: VertexClient, training_data: str, emulator: Emulator
) -> None:
    emulator.configure(step_seconds=0.2)  # slow enough to be cancelled while it runs
    created = await client.create_tuning_job(spec(training_data))

    await client.cancel_tuning_job(created.name)
    emulator.configure(step_seconds=0.01)
    job = await until_ended(client, created.name)

    assert job.state is JobState.CANCELLED
    assert job.error is not None and job.error.code == 1
    assert job.tuned_model is None
    with pytest.raises(FailedPrecondition) as raised:
        await client.cancel_tuning_job(created.name)
    assert isinstance(raised.value, InvalidArgument)  # still a 400, for callers that do not care which
    assert "JOB_STATE_CANCELLED" in raised.value.message


async def test_unknown_jobs_are_not_found(client: VertexClient) -> None:
    unknown = f"{PARENT}/tuningJobs/1234567890123456789"
    with pytest.raises(NotFound):
        await client.get_tuning_job(unknown)
    with pytest.raises(NotFound):
        await client.cancel_tuning_job(unknown)


async def test_a_refused_create_is_invalid_argument_with_the_service_message(
    client: VertexClient, training_data: str, emulator: Emulator
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await client.create_tuning_job(spec(training_data, base_model="gemini-0.1-nonexistent"))
    assert raised.value.message.startswith("Base model gemini-0.1-nonexistent is not supported for tuning.")
    assert raised.value.http_status == 400
    with pytest.raises(InvalidArgument) as missing:
        await client.create_tuning_job(spec(f"gs://{BUCKET}/not-uploaded.jsonl"))
    assert "gs://tk-data/not-uploaded.jsonl does not exist" in missing.value.message
    assert emulator.stats()["tuning_creates"]["accepted"] == 0


@pytest.mark.parametrize(
    "name",
    [
        f"{PARENT}/tuningJobs/12/../../../other",
        f"{PARENT}/tuningJobs/12?alt=media",
        f"{PARENT}/tuningJobs/abc",
        "https://example.com/v1/tuningJobs/1",
        f"{PARENT}/tuningJobs/12%2F..",
        f"projects/../locations/{LOCATION}/tuningJobs/12",
    ],
)
async def test_names_of_another_shape_never_reach_a_url(client: VertexClient, emulator: Emulator, name: str) -> None:
    with pytest.raises(ValueError, match="not a valid resource name"):
        await client.get_tuning_job(name)
    with pytest.raises(ValueError, match="not a valid resource name"):
        await client.cancel_tuning_job(name)
    assert emulator.stats()["requests"]["total"] == 0
