"""`jobs` and `show` on rows the daemon wrote for Vertex AI: its workers, in-process, against the emulator (a
bucket, a service-account key, a concurrent-tuning quota that queues), then the real command in a subprocess."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.cli.conftest import Cli
from tests.waiting import wait_until
from tunekeeper.backends.vertex.adapter import VertexBackend
from tunekeeper.config import Settings
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.dispatcher import Dispatcher
from tunekeeper.daemon.poller import Poller
from tunekeeper.daemon.service import open_context
from tunekeeper.daemon.worker import JobWorker
from tunekeeper.db.records import Job, NewJob
from tunekeeper.emulator import Emulator, EmulatorConfig
from tunekeeper.states import State

PROJECT = "tk-rows-1234"
LOCATION = "us-central1"
BUCKET = "tk-rows-staging"
PREFIX = f"projects/{PROJECT}/locations/{LOCATION}"
PAIRS = [{"text_input": str(n), "output": str(n + 1)} for n in range(8)]


async def one_pass(worker: JobWorker) -> None:
    for job in await worker.claim(100):
        await worker.handle(job)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    # One tuning slot, and a create beyond it waits for the slot (WAITING_FOR_QUOTA) instead of meeting 429.
    config = EmulatorConfig(
        step_seconds=0.01, buckets=frozenset({BUCKET}), quota_mode="wait", max_active_tuning=1, log_requests=False
    )
    async with Emulator(config) as emu:
        yield emu


@pytest.fixture
async def context(emulator: Emulator, sqlite_url: str, tmp_path: Path) -> AsyncIterator[DaemonContext]:
    key = emulator.write_service_account_file(tmp_path / "key.json", project=PROJECT)
    settings = Settings(
        backend="vertex",
        database={"url": sqlite_url, "listen": False},
        vertex={
            "project": PROJECT,
            "location": LOCATION,
            "base_url": emulator.base_url,
            "storage_url": emulator.base_url,
            "credentials_file": str(key),
            "staging_uri": f"gs://{BUCKET}/tk",
            "max_active_jobs": 3,
            "creates_per_minute": 600,
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.1,
        },
        poll={"min_interval": 0.05, "max_interval": 0.2, "min_step_seconds": 0},
    )
    async with open_context(settings) as ctx:
        yield ctx


async def poll_until(context: DaemonContext, job_id: int, what: str, reached: Callable[[Job], bool]) -> Job:
    """Poll (as the poller's loop would) until the job's row shows `reached`; a job that fails fails the test."""
    poller = Poller(context)

    async def seen() -> Job | None:
        await one_pass(poller)
        job = await context.store.get_job(job_id)
        assert job is not None
        assert job.last_error is None, job.last_error
        return job if reached(job) else None

    return await wait_until(seen, within=20, message=f"job {job_id} {what}")


def field(page: str, label: str) -> str | None:
    found = re.search(rf"^  {re.escape(label)}  +(\S.*)$", page, re.MULTILINE)  # labels are padded
    return found.group(1) if found else None


async def test_jobs_and_show_name_what_vertex_ai_holds(
    context: DaemonContext, emulator: Emulator, sqlite_url: str, tmp_path: Path
) -> None:
    store = context.store
    # done: tuned, its model deployed to an endpoint
    done = await store.add_job(NewJob(display_name="done one", training_data=PAIRS))
    await one_pass(Dispatcher(context))
    await poll_until(context, done, "succeeded", lambda job: job.state is State.SUCCEEDED)
    # holding takes the one slot and stays pending; waiting queues behind it at the service
    emulator.configure(step_seconds=3600)
    holding = await store.add_job(NewJob(display_name="holding one", training_data=PAIRS))
    waiting = await store.add_job(NewJob(display_name="waiting one", training_data=PAIRS))
    await one_pass(Dispatcher(context))
    await poll_until(context, waiting, "waiting for quota", lambda job: job.sub_state == "WAITING_FOR_QUOTA")
    await poll_until(context, holding, "pending", lambda job: job.sub_state == "PENDING")
    queued = await store.add_job(NewJob(display_name="queued one", training_data=PAIRS))  # nothing sent: no backend

    # What the service holds, to hold the rows against.
    deployment = await store.deployment_id()
    assert isinstance(context.backend, VertexBackend)
    done_row = await store.get_job(done)
    assert done_row is not None and done_row.operation_name is not None
    remote = await context.backend.client.get_tuning_job(done_row.operation_name)
    assert remote.tuned_model is not None
    staged = f"gs://{BUCKET}/tk/{deployment}/{done}/train.jsonl"
    assert await context.backend.client.storage.stat(staged) is not None

    cli = Cli(sqlite_url, tmp_path)
    listing, listing_json, shown_done, shown_waiting, shown_json = await asyncio.gather(
        asyncio.to_thread(cli, "jobs"),
        asyncio.to_thread(cli, "jobs", "--json"),
        asyncio.to_thread(cli, "show", str(done)),
        asyncio.to_thread(cli, "show", str(waiting)),
        asyncio.to_thread(cli, "show", str(waiting), "--json"),
    )
    for result in (listing, listing_json, shown_done, shown_waiting, shown_json):
        assert result.returncode == 0, result.stderr

    # jobs: the backend column, the sub-state beside the state, the model
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "BACKEND", "STATE", "PROGRESS", "MODEL", "AGE"]
    by_id = {int(row.split()[0]): row for row in rows}
    state_at, backend_at, model_at = header.index("STATE"), header.index("BACKEND"), header.index("MODEL")
    assert by_id[done][backend_at:].split()[0] == "vertex"
    assert by_id[done][state_at:].split()[0] == "succeeded"
    assert by_id[done][model_at:].split()[0] == remote.tuned_model.model
    assert by_id[waiting][state_at:].startswith("tuning (waiting for quota)")
    assert by_id[holding][state_at:].startswith("tuning (pending)")
    assert by_id[queued][backend_at:state_at].strip() == ""  # the row names no backend yet
    assert by_id[queued][state_at:].split()[0] == "queued"

    # jobs --json: the names as the row holds them
    summaries = {job["id"]: job for job in json.loads(listing_json.stdout)}
    assert summaries[done]["backend"] == "vertex"
    assert summaries[done]["operation_name"] == done_row.operation_name
    assert summaries[done]["tuned_model_name"] == remote.tuned_model.model
    assert summaries[done]["tuned_endpoint_name"] == remote.tuned_model.endpoint
    assert summaries[done]["training_uri"] == staged
    assert summaries[done]["sub_state"] is None  # cleared when the job left tuning
    assert summaries[waiting]["sub_state"] == "WAITING_FOR_QUOTA"
    assert summaries[waiting]["tuned_endpoint_name"] is None
    assert summaries[queued]["backend"] is None

    # show: every Vertex name of a finished job
    page = shown_done.stdout
    assert field(page, "state") == "succeeded"
    assert field(page, "backend") == "vertex"
    assert field(page, "tuning job") == done_row.operation_name
    assert re.fullmatch(rf"{PREFIX}/tuningJobs/\d+", done_row.operation_name)
    assert field(page, "model") == remote.tuned_model.model
    assert field(page, "endpoint") == remote.tuned_model.endpoint
    assert field(page, "staged file") == staged
    assert field(page, "operation") is None

    # show: a job the service holds back for quota
    page = shown_waiting.stdout
    assert field(page, "state") == "tuning (waiting for quota)"
    assert field(page, "backend") == "vertex"
    assert re.fullmatch(rf"{PREFIX}/tuningJobs/\d+", field(page, "tuning job") or "")
    assert field(page, "staged file") == f"gs://{BUCKET}/tk/{deployment}/{waiting}/train.jsonl"
    assert field(page, "model") is None
    assert field(page, "endpoint") is None

    shown = json.loads(shown_json.stdout)
    assert shown["backend"] == "vertex"
    assert shown["sub_state"] == "WAITING_FOR_QUOTA"
    assert shown["training_uri"] == f"gs://{BUCKET}/tk/{deployment}/{waiting}/train.jsonl"
    assert [event["kind"] for event in shown["events"]] == ["claimed", "accepted"]
