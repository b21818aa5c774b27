"""A submission's lease: renewed from the claim on, while the job's data is read and checked (however long that
takes), and `daemon.max_attempts` holds for takeovers too: a job whose submitter's lease ran out (a crash, a
hang) is claimed again and counts an attempt; at the cap it fails instead of being tried once more. On both
backends, with the daemon's own workers in this process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.daemon.test_purge import make_settings, one_pass
from tests.vertex_daemon.support import PROJECT, emulator_config, vertex_settings
from tests.waiting import wait_until
from tunekeeper.config import DaemonSettings, Settings
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.dispatcher import Dispatcher
from tunekeeper.daemon.service import open_context
from tunekeeper.db.records import Job, NewJob
from tunekeeper.emulator import Emulator
from tunekeeper.states import State

MAX_ATTEMPTS = 2
PAIRS = [{"text_input": str(n), "output": str(n + 1)} for n in range(4)]


@pytest.fixture(params=["gemini", "vertex"])
async def context(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> AsyncIterator[DaemonContext]:
    async with Emulator(emulator_config()) as emulator:
        settings: Settings
        if request.param == "vertex":
            key_file = emulator.write_service_account_file(tmp_path / "key.json", project=PROJECT)
            settings = vertex_settings(database_url, emulator, key_file)
        else:
            settings = make_settings(database_url, emulator.base_url)
        daemon = DaemonSettings(replica_name="survivor", lease_seconds=3, max_attempts=MAX_ATTEMPTS)
        async with open_context(settings.model_copy(update={"daemon": daemon})) as found:
            yield found


async def abandoned(context: DaemonContext, attempts: int) -> int:
    """A job left `submitting` by a submitter that died `attempts` claims in: its lease ran out a minute ago."""
    store = context.store
    job_id = await store.add_job(NewJob(display_name="abandoned", training_data=PAIRS))
    statement = sa.text(
        "UPDATE tuning_jobs SET state = 'submitting', attempts = :attempts, lease_owner = 'dead-replica', "
        "lease_expires_at = :expired, tuned_model_id = :model_id WHERE id = :id"
    )
    async with store.engine.begin() as conn:
        await conn.execute(
            statement,
            {
                "id": job_id,
                "attempts": attempts,
                "expired": store.clock() - timedelta(minutes=1),
                "model_id": f"abandoned-{job_id}",
            },
        )
    return job_id


async def job_of(context: DaemonContext, job_id: int) -> Job:
    job = await context.store.get_job(job_id)
    assert job is not None
    return job


async def test_a_takeover_at_the_cap_fails_the_job(context: DaemonContext) -> None:
    job_id = await abandoned(context, attempts=MAX_ATTEMPTS)
    await one_pass(Dispatcher(context))
    job = await job_of(context, job_id)
    assert job.state is State.FAILED, (job.state, job.last_error)
    assert job.last_error == f"gave up after {MAX_ATTEMPTS} attempts: the submitter's lease ran out each time"
    assert job.attempts == MAX_ATTEMPTS + 1
    kinds = [event.kind for event in await context.store.events(job_id)]
    assert kinds == ["claimed", "submit_failed"]


async def test_a_takeover_below_the_cap_is_tried(context: DaemonContext) -> None:
    job_id = await abandoned(context, attempts=MAX_ATTEMPTS - 1)
    await one_pass(Dispatcher(context))
    job = await job_of(context, job_id)
    assert job.state is State.TUNING, (job.state, job.last_error)
    assert job.attempts == MAX_ATTEMPTS
    claimed = [event for event in await context.store.events(job_id) if event.kind == "claimed"]
    assert [event.detail["taken_over_from"] for event in claimed] == ["dead-replica"]


async def test_the_lease_is_renewed_while_the_data_is_checked(context: DaemonContext) -> None:
    """Large data is checked in a thread. The loop's only worker thread is kept busy here, so the check waits for
    it as a long read would; meanwhile the job's lease must move ahead, or another replica would take the job."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    gate = threading.Event()
    busy = loop.run_in_executor(None, gate.wait)
    store = context.store
    job_id = await store.add_job(NewJob(display_name="large", training_data=PAIRS * 300))  # past the inline limit
    dispatcher = Dispatcher(context)
    [claimed] = await dispatcher.claim(1)
    assert claimed.id == job_id
    first = (await job_of(context, job_id)).lease_expires_at
    assert first is not None

    async def renewed() -> bool:
        expires = (await job_of(context, job_id)).lease_expires_at
        return expires is not None and expires > first

    try:
        async with asyncio.TaskGroup() as group:
            keeper = group.create_task(dispatcher.leases.run())
            handling = group.create_task(dispatcher.handle(claimed))
            try:
                await wait_until(renewed, within=10, message="the lease to be renewed while the check waits")
                assert not handling.done()
            finally:
                gate.set()
            await handling
            keeper.cancel()
    finally:
        gate.set()
        await busy
    job = await job_of(context, job_id)
    assert job.state is State.TUNING, (job.state, job.last_error)
