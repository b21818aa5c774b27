"""A Vertex AI user's whole story with Google's own SDKs, unchanged, against one emulator: a key file written by
the emulator, google-auth's real token flow (signature and all), the training data uploaded by
google-cloud-storage, then google-genai in Vertex mode, sync and async: tune, follow until the job has ended,
list with a filter across pages, ask the tuned endpoint, and cancel a second job. Only the base URLs and the
key file point here."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google import genai
from google.cloud import storage
from google.genai import types
from google.oauth2 import service_account

from tests.emulator.conftest import make_config
from tunekeeper.emulator import Emulator

PROJECT, LOCATION, BUCKET = "sdk-story", "us-central1", "sdk-story-data"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
PAIRS = [(f"what comes after {n}", str(n + 1)) for n in range(16)]


def dataset() -> str:
    def example(prompt: str, answer: str) -> str:
        turns = [{"role": "user", "parts": [{"text": prompt}]}, {"role": "model", "parts": [{"text": answer}]}]
        return json.dumps({"contents": turns})

    return "\n".join(example(prompt, answer) for prompt, answer in PAIRS) + "\n"


@pytest.fixture
async def story(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Emulator, Path]]:
    config = make_config(buckets=frozenset({BUCKET}), step_seconds=0.01)
    async with Emulator(config) as emu:
        key_file = tmp_path / "service-account.json"
        emu.write_service_account_file(key_file, project=PROJECT)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emu.base_url)
        yield emu, key_file


def credentials(key_file: Path) -> service_account.Credentials:
    return service_account.Credentials.from_service_account_file(str(key_file), scopes=SCOPES)


def upload_dataset(key_file: Path, name: str) -> str:
    client = storage.Client(project=PROJECT, credentials=credentials(key_file))
    client.bucket(BUCKET).blob(name).upload_from_string(dataset(), content_type="application/jsonl")
    return f"gs://{BUCKET}/{name}"


def genai_client(emu: Emulator, key_file: Path) -> genai.Client:
    return genai.Client(
        vertexai=True,
        project=PROJECT,
        location=LOCATION,
        credentials=credentials(key_file),
        http_options=types.HttpOptions(base_url=emu.base_url),
    )


def tuning_config(label: str) -> types.CreateTuningJobConfig:
    return types.CreateTuningJobConfig(
        tuned_model_display_name=f"story {label}",
        epoch_count=2,
        adapter_size="ADAPTER_SIZE_FOUR",
        labels={"run": label},
    )


def sync_story(client: genai.Client, uri: str) -> dict[str, object]:
    job = client.tunings.tune(
        base_model="gemini-2.5-flash", training_dataset=types.TuningDataset(gcs_uri=uri), config=tuning_config("sync")
    )
    states = [job.state]
    deadline = time.monotonic() + 30
    while not job.has_ended and time.monotonic() < deadline:
        time.sleep(0.02)  # the user's poll loop (the emulator's steps are 10 ms)
        job = client.tunings.get(name=job.name)
        states.append(job.state)
    assert job.tuned_model is not None and job.tuned_model.endpoint
    answer = client.models.generate_content(model=job.tuned_model.endpoint, contents="what comes after 7")

    second = client.tunings.tune(
        base_model="gemini-2.5-flash", training_dataset=types.TuningDataset(gcs_uri=uri), config=tuning_config("gone")
    )
    client.tunings.cancel(name=second.name)
    deadline = time.monotonic() + 30
    while not second.has_ended and time.monotonic() < deadline:
        time.sleep(0.02)
        second = client.tunings.get(name=second.name)

    listed = list(client.tunings.list(config={"page_size": 1, "filter": 'state="JOB_STATE_SUCCEEDED"'}))
    return {"job": job, "states": states, "answer": answer.text, "cancelled": second, "listed": listed}


async def test_the_story_with_the_sync_clients(story: tuple[Emulator, Path]) -> None:
    emu, key_file = story
    uri = await asyncio.to_thread(upload_dataset, key_file, "story/sync.jsonl")
    seen = await asyncio.to_thread(sync_story, genai_client(emu, key_file), uri)

    job = seen["job"]
    assert isinstance(job, types.TuningJob)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert job.name is not None and job.name.startswith(f"projects/{PROJECT}/locations/{LOCATION}/tuningJobs/")
    states = seen["states"]
    assert isinstance(states, list) and states[-1] == types.JobState.JOB_STATE_SUCCEEDED  # RUNNING may pass unseen
    assert seen["answer"] == "8"  # the nearest training example's output
    cancelled = seen["cancelled"]
    assert isinstance(cancelled, types.TuningJob)
    assert cancelled.state == types.JobState.JOB_STATE_CANCELLED
    assert cancelled.error is not None and cancelled.error.code == 1
    listed = seen["listed"]
    assert isinstance(listed, list) and [item.name for item in listed] == [job.name]

    stats = emu.stats()["requests"]["by_route_status"]
    assert stats["oauth2.token"].get("200", 0) >= 1  # google-auth's real flow, signature checked
    assert stats["storage.objects.insert"] == {"200": 1}
    assert stats["tuningJobs.create"] == {"200": 2}
    assert stats["tuningJobs.cancel"] == {"200": 1}
    assert stats["endpoints.generateContent"] == {"200": 1}


async def test_the_story_with_the_async_client(story: tuple[Emulator, Path]) -> None:
    emu, key_file = story
    uri = await asyncio.to_thread(upload_dataset, key_file, "story/async.jsonl")
    client = genai_client(emu, key_file).aio

    job = await client.tunings.tune(
        base_model="gemini-2.5-flash", training_dataset=types.TuningDataset(gcs_uri=uri), config=tuning_config("aio")
    )
    deadline = time.monotonic() + 30
    while not job.has_ended and time.monotonic() < deadline:
        await asyncio.sleep(0.02)  # the user's poll loop
        assert job.name is not None
        job = await client.tunings.get(name=job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert job.tuned_model is not None and job.tuned_model.endpoint
    answer = await client.models.generate_content(model=job.tuned_model.endpoint, contents="what comes after 12")
    assert answer.text == "13"
    pages = await client.tunings.list(config={"page_size": 1, "filter": 'labels.run="aio"'})
    assert [item.name async for item in pages] == [job.name]
