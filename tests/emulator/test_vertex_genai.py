"""google-genai, unchanged, in Vertex AI mode against the emulator's tuning jobs: tune, get until ended, list
across pages with a filter, cancel; the sync client (in a thread, since the emulator shares the test's event
loop) and the async one."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import google.oauth2.credentials
import pytest
from google import genai
from google.genai import types

from tests.emulator.conftest import make_config
from tests.emulator.test_vertex_jobs import BUCKET, dataset
from tests.waiting import wait_until
from tunekeeper.emulator import Emulator
from tunekeeper.emulator.oauth.tokens import CLOUD_PLATFORM_SCOPE

PROJECT = "proj-genai"
LOCATION = "us-central1"
TRAIN_URI = f"gs://{BUCKET}/train.jsonl"
T = TypeVar("T")


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(make_config(buckets=frozenset({BUCKET}))) as emu:
        emu.state.storage.put(BUCKET, "train.jsonl", dataset(16), time.time())
        yield emu


@pytest.fixture
def client(emulator: Emulator) -> genai.Client:
    token = emulator.state.tokens.issue("sa@example", frozenset({CLOUD_PLATFORM_SCOPE}), time.time())
    return genai.Client(
        vertexai=True,
        project=PROJECT,
        location=LOCATION,
        credentials=google.oauth2.credentials.Credentials(token.access_token),
        http_options=types.HttpOptions(base_url=emulator.base_url),
    )


def tuning_config(job: str) -> types.CreateTuningJobConfig:
    return types.CreateTuningJobConfig(
        tuned_model_display_name=f"numbers {job}",
        epoch_count=2,
        learning_rate_multiplier=1.0,
        adapter_size=types.AdapterSize.ADAPTER_SIZE_FOUR,
        labels={"tunekeeper-job": job},
    )


async def in_thread(function: Callable[[], T]) -> T:
    def quiet() -> T:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "The SDK's tuning implementation is experimental"
            return function()

    return await asyncio.to_thread(quiet)


async def test_sync_client_tunes_polls_lists_and_cancels(emulator: Emulator, client: genai.Client) -> None:
    dataset_ref = types.TuningDataset(gcs_uri=TRAIN_URI)
    job = await in_thread(
        lambda: client.tunings.tune(
            base_model="gemini-2.5-flash", training_dataset=dataset_ref, config=tuning_config("7")
        )
    )
    assert job.name is not None and job.name.startswith(f"projects/{PROJECT}/locations/{LOCATION}/tuningJobs/")
    assert job.state == types.JobState.JOB_STATE_PENDING
    name = job.name

    async def ended() -> types.TuningJob | None:
        current = await in_thread(lambda: client.tunings.get(name=name))
        return current if current.has_ended else None

    done = await wait_until(ended, within=10.0, message="the job ended")
    assert done.has_succeeded
    assert done.tuned_model is not None and done.tuned_model.endpoint is not None
    assert done.tuned_model.endpoint.startswith(f"projects/{PROJECT}/locations/{LOCATION}/endpoints/")
    assert done.tuned_model.model is not None and done.tuned_model.model.endswith("@1")
    assert done.tuning_data_stats is not None
    stats = done.tuning_data_stats.supervised_tuning_data_stats
    assert stats is not None and stats.tuning_step_count == 4 and stats.tuning_dataset_example_count == 16
    assert done.tuning_job_metadata is not None and done.tuning_job_metadata.completed_epoch_count == 2
    assert done.labels == {"tunekeeper-job": "7"}

    others = [
        await in_thread(
            lambda: client.tunings.tune(
                base_model="gemini-2.5-flash", training_dataset=dataset_ref, config=tuning_config("8")
            )
        )
        for _ in range(5)
    ]
    listed = await in_thread(
        lambda: [
            item.name for item in client.tunings.list(config={"page_size": 2, "filter": 'labels.tunekeeper-job="8"'})
        ]
    )
    assert listed == [other.name for other in others]  # three pages of at most two
    assert emulator.stats()["requests"]["by_route"]["tuningJobs.list"] == 3

    emulator.configure(step_seconds=60.0)
    slow = await in_thread(
        lambda: client.tunings.tune(
            base_model="gemini-2.5-flash", training_dataset=dataset_ref, config=tuning_config("9")
        )
    )
    assert slow.name is not None
    slow_name = slow.name
    await in_thread(lambda: client.tunings.cancel(name=slow_name))
    cancelling = await in_thread(lambda: client.tunings.get(name=slow_name))
    assert cancelling.state == types.JobState.JOB_STATE_CANCELLING and not cancelling.has_ended
    emulator.configure(step_seconds=0.001)

    async def cancelled() -> types.TuningJob | None:
        current = await in_thread(lambda: client.tunings.get(name=slow_name))
        return current if current.has_ended else None

    final = await wait_until(cancelled, within=10.0, message="the job cancelled")
    assert final.state == types.JobState.JOB_STATE_CANCELLED
    assert final.error is not None and final.error.code == 1


async def test_async_client_tunes_polls_lists_and_cancels(emulator: Emulator, client: genai.Client) -> None:
    dataset_ref = types.TuningDataset(gcs_uri=TRAIN_URI)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "The SDK's tuning implementation is experimental"
        jobs = [
            await client.aio.tunings.tune(
                base_model="gemini-2.5-flash", training_dataset=dataset_ref, config=tuning_config("5")
            )
            for _ in range(3)
        ]
    names = [job.name for job in jobs]
    assert all(name is not None for name in names)

    async def all_ended() -> list[types.TuningJob] | None:
        current = [await client.aio.tunings.get(name=name) for name in names if name is not None]
        return current if all(job.has_ended for job in current) else None

    ended = await wait_until(all_ended, within=10.0, message="the jobs ended")
    assert all(job.has_succeeded for job in ended)
    assert len({job.tuned_model.endpoint for job in ended if job.tuned_model is not None}) == 3

    pager = await client.aio.tunings.list(
        config={"page_size": 2, "filter": 'state="JOB_STATE_SUCCEEDED" AND labels.tunekeeper-job="5"'}
    )
    listed = [job.name async for job in pager]
    assert listed == names

    emulator.configure(step_seconds=60.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow = await client.aio.tunings.tune(
            base_model="gemini-2.5-flash", training_dataset=dataset_ref, config=tuning_config("6")
        )
    assert slow.name is not None
    await client.aio.tunings.cancel(name=slow.name)
    assert (await client.aio.tunings.get(name=slow.name)).state == types.JobState.JOB_STATE_CANCELLING
    finished = await client.aio.tunings.get(name=names[0] or "")
    assert finished.state == types.JobState.JOB_STATE_SUCCEEDED
    with pytest.raises(genai.errors.ClientError) as refused:
        await client.aio.tunings.cancel(name=names[0] or "")
    assert refused.value.code == 400
    assert refused.value.status == "FAILED_PRECONDITION"
