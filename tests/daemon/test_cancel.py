"""Cancellation by a real daemon process: queued, submitting and tuning jobs, finished jobs, and a crash midway.

A producer cancels with `UPDATE tuning_jobs SET cancel_requested = TRUE` or `tunekeeper cancel ID`; either way
the job ends `cancelled`, its operation stopped and its model gone from the service (unless
purge.cancelled_after keeps it for a while).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.harness import TEST_API_KEY, DaemonProcess, daemon_environment
from tests.waiting import wait_until
from tunekeeper.backends.gemini.client import GeminiClient
from tunekeeper.backends.googleapi.errors import NotFound
from tunekeeper.db.records import Job, JobEvent, NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import State

PAIRS = [{"text_input": str(n), "output": str(n + 1)} for n in range(10)]
SLOW_STEP = 5.0  # seconds per simulated step: a job tunes for minutes, so it is still running when cancelled


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TUNEKEEPER_")}
    env["TUNEKEEPER_DATABASE__URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "tunekeeper", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def cancel(how: str, store: JobStore, database_url: str, job_id: int, expected_state: State) -> None:
    """Ask for the cancellation as a producer would, plain SQL or the command, while the job is `expected_state`."""
    if how == "sql":
        # The state in the WHERE clause only proves that the request met the job in the state the test meant.
        statement = f"UPDATE tuning_jobs SET cancel_requested = TRUE WHERE id = {job_id} AND state = '{expected_state}'"
        async with store.engine.begin() as conn:
            assert (await conn.execute(sa.text(statement))).rowcount == 1, f"job {job_id} was not {expected_state}"
        return
    done = await asyncio.to_thread(run_cli, database_url, "cancel", str(job_id))
    assert done.returncode == 0, done.stderr
    assert f"cancel requested for job {job_id} ({expected_state.value})" in done.stdout


async def wait_state(store: JobStore, job_id: int, state: State, within: float = 15.0) -> Job:
    async def reached() -> Job | None:
        job = await store.get_job(job_id)
        assert job is not None
        return job if job.state == state else None

    return await wait_until(reached, within=within, message=f"job {job_id} to be {state}")


def kinds(events: list[JobEvent]) -> list[str]:
    return [event.kind for event in events if event.kind != "progress"]


def remote_model(emulator: Emulator, job: Job) -> dict[str, object]:
    """The emulator's record of the job's model (kept after deletion, with deleted_at)."""
    assert job.tuned_model_id is not None
    model: dict[str, object] = emulator.stats()["models"][job.tuned_model_id]
    return model


async def assert_model_gone(emulator: Emulator, job: Job) -> None:
    """Deleted from the service, after its operation was stopped (a cancelled create ends FAILED)."""
    model = remote_model(emulator, job)
    assert model["deleted_at"] is not None, model
    assert model["state"] == "FAILED", model  # fail_rate is 0: only a cancel makes it FAILED
    assert job.tuned_model_name is not None
    async with GeminiClient(base_url=emulator.base_url, api_key=TEST_API_KEY) as client:
        with pytest.raises(NotFound):
            await client.get_tuned_model(job.tuned_model_name)


def cancels_sent(emulator: Emulator) -> int:
    counts = emulator.stats()["requests"]["by_route_status"].get("tunedModels.operations.cancel", {})
    return int(counts.get("200", 0))


@pytest.mark.parametrize("how", ["sql", "cli"])
async def test_cancel_a_queued_job_and_a_tuning_job(
    how: str, database_url: str, store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(step_seconds=SLOW_STEP)
    env = daemon_environment(database_url, emulator.base_url, {"TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS": "1"})
    async with DaemonProcess(tmp_path, env):
        running = await store.add_job(NewJob(display_name="running", training_data=PAIRS))
        tuning = await wait_state(store, running, State.TUNING)
        # The only slot is taken: this one waits in the queue.
        waiting = await store.add_job(NewJob(display_name="waiting", training_data=PAIRS))

        await cancel(how, store, database_url, waiting, State.QUEUED)
        queued = await wait_state(store, waiting, State.CANCELLED)
        assert queued.attempts == 0 and queued.tuned_model_id is None
        assert kinds(await store.events(waiting)) == ["cancelled"]
        assert emulator.stats()["creates"]["attempted"] == 1  # only the running job was ever sent

        await cancel(how, store, database_url, running, State.TUNING)
        cancelled = await wait_state(store, running, State.CANCELLED)

    assert emulator.stats()["creates"]["attempted"] == 1
    assert cancels_sent(emulator) == 1
    await assert_model_gone(emulator, tuning)
    assert cancelled.purged_at is not None and not cancelled.cancel_requested
    events = await store.events(running)
    assert kinds(events) == ["claimed", "accepted", "cancel_started", "cancelled"]
    assert (events[-2].from_state, events[-2].to_state) == (State.TUNING, State.CANCELLING)
    assert events[-1].detail == {"model_deleted": True}


async def test_cancel_a_job_while_its_create_is_in_flight(
    database_url: str, store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(step_seconds=SLOW_STEP, latency=(1.5, 1.5))  # every call, the create first, takes 1.5 s
    async with DaemonProcess(tmp_path, daemon_environment(database_url, emulator.base_url)):
        job_id = await store.add_job(NewJob(display_name="slow create", training_data=PAIRS))
        await wait_state(store, job_id, State.SUBMITTING)
        await cancel("sql", store, database_url, job_id, State.SUBMITTING)
        emulator.configure(latency=None)  # the create already in flight still takes its 1.5 s
        job = await wait_state(store, job_id, State.CANCELLED)
    # The canceller left the submission to its submitter, then stopped what it had started.
    assert kinds(await store.events(job_id)) == ["claimed", "accepted", "cancel_started", "cancelled"]
    assert emulator.stats()["creates"]["accepted"] == 1
    assert cancels_sent(emulator) == 1
    await assert_model_gone(emulator, job)


async def test_cancel_a_job_whose_submitter_died_mid_create(
    database_url: str, store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(step_seconds=SLOW_STEP)
    emulator.set_faults({"drop-after": 1.0})  # every call takes effect, then its connection drops: no answer
    # The client keeps retrying the create, so the job stays in `submitting` until the process dies.
    env = daemon_environment(database_url, emulator.base_url, {"TUNEKEEPER_GEMINI__MAX_RETRIES": "100"})
    daemon = DaemonProcess(tmp_path, env)
    try:
        await daemon.start()
        job_id = await store.add_job(NewJob(display_name="answer lost", training_data=PAIRS))
        await wait_state(store, job_id, State.SUBMITTING)
        await wait_until(lambda: emulator.stats()["creates"]["accepted"] == 1, within=10, message="the create")
        await daemon.kill()
        emulator.set_faults({"drop-after": 0.0})

        # With the daemon down the job waits in `submitting`, under the dead submitter's lease.
        await cancel("cli", store, database_url, job_id, State.SUBMITTING)
        await daemon.start()
        job = await wait_state(store, job_id, State.CANCELLED, within=20)
    finally:
        if daemon.running:
            await daemon.stop()

    events = await store.events(job_id)
    assert kinds(events) == ["claimed", "cancel_started", "cancelled"]  # never accepted: nobody saw the answer
    assert (events[-2].from_state, events[-2].to_state) == (State.SUBMITTING, State.CANCELLING)
    assert job.operation_name is None
    # Another create of that submitter's may still be on its way: the purger looks again before purged_at is set.
    assert job.purged_at is None and events[-1].detail == {"model_deleted": False, "late_create_check": True}
    # The canceller found the operation by the model's id, stopped it and deleted the model; the dispatcher
    # did not create it again.
    assert cancels_sent(emulator) == 1
    assert emulator.stats()["creates"]["accepted"] == 1
    await assert_model_gone(emulator, dataclasses.replace(job, tuned_model_name=f"tunedModels/{job.tuned_model_id}"))


async def test_cancelling_a_finished_job_is_refused_or_ignored(
    database_url: str, store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    async with DaemonProcess(tmp_path, daemon_environment(database_url, emulator.base_url)) as daemon:
        job_id = await store.add_job(NewJob(display_name="done already", training_data=PAIRS))
        job = await wait_state(store, job_id, State.SUCCEEDED)

        refused = await asyncio.to_thread(run_cli, database_url, "cancel", str(job_id))
        assert refused.returncode == 1
        assert f"job {job_id} is succeeded; finished jobs cannot be cancelled" in refused.stderr
        unchanged = await store.get_job(job_id)
        assert unchanged is not None and not unchanged.cancel_requested

        await cancel("sql", store, database_url, job_id, State.SUCCEEDED)

        async def flag_cleared() -> Job | None:
            found = await store.get_job(job_id)
            return found if found is not None and not found.cancel_requested else None

        after = await wait_until(flag_cleared, within=10, message="the late cancel request to be cleared")
        await wait_until(lambda: daemon.events("cancel_ignored"), within=5, message="a cancel_ignored log line")
        lines = daemon.events("cancel_ignored")

    assert after.state == State.SUCCEEDED
    ignored = [event for event in await store.events(job_id) if event.kind == "cancel_ignored"]
    assert [event.detail for event in ignored] == [{"state": "succeeded"}]
    assert [(line["job_id"], line["state"]) for line in lines] == [(job_id, "succeeded")]
    model = remote_model(emulator, job)
    assert model["deleted_at"] is None and model["state"] == "ACTIVE"  # the finished model is untouched
    assert cancels_sent(emulator) == 0


async def test_a_daemon_killed_while_cancelling_finishes_after_restart(
    database_url: str, store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(step_seconds=SLOW_STEP)
    daemon = DaemonProcess(tmp_path, daemon_environment(database_url, emulator.base_url))
    try:
        await daemon.start()
        job_id = await store.add_job(NewJob(display_name="crash while cancelling", training_data=PAIRS))
        tuning = await wait_state(store, job_id, State.TUNING)
        emulator.configure(latency=(2.0, 2.0))  # cancel and delete calls take 2 s each: a wide window
        await cancel("sql", store, database_url, job_id, State.TUNING)
        await wait_state(store, job_id, State.CANCELLING)
        await daemon.kill()

        stuck = await store.get_job(job_id)
        assert stuck is not None and stuck.state == State.CANCELLING, "the cancellation ended before the kill"
        assert stuck.lease_owner is not None and stuck.lease_expires_at is not None
        emulator.configure(latency=None)

        await daemon.start()
        job = await wait_state(store, job_id, State.CANCELLED, within=20)
        # The line is written after the commit that the store already shows.
        finished_by = await daemon.wait_for_events("job_state_changed", lambda line: line["transition"] == "cancelled")
    finally:
        if daemon.running:
            await daemon.stop()

    events = await store.events(job_id)
    assert kinds(events) == ["claimed", "accepted", "cancel_started", "cancelled"]
    # The restarted daemon waited for the dead one's lease to run out before taking the job over.
    assert events[-1].at >= stuck.lease_expires_at
    assert [line["job_id"] for line in finished_by] == [job_id]  # logged once: by the second process
    assert daemon.starts == 2
    assert job.purged_at is not None
    await assert_model_gone(emulator, tuning)


async def test_with_cancelled_after_the_model_is_kept_then_purged_on_schedule(
    database_url: str, store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(step_seconds=SLOW_STEP)
    env = daemon_environment(
        database_url,
        emulator.base_url,
        {"TUNEKEEPER_PURGE__CANCELLED_AFTER": "3", "TUNEKEEPER_PURGE__INTERVAL": "1"},
    )
    async with DaemonProcess(tmp_path, env) as daemon:
        job_id = await store.add_job(NewJob(display_name="kept for a while", training_data=PAIRS))
        await wait_state(store, job_id, State.TUNING)
        await cancel("cli", store, database_url, job_id, State.TUNING)
        cancelled = await wait_state(store, job_id, State.CANCELLED)

        # Kept for now, its operation stopped.
        assert remote_model(emulator, cancelled)["deleted_at"] is None
        assert cancelled.operation_name is not None
        async with GeminiClient(base_url=emulator.base_url, api_key=TEST_API_KEY) as client:
            operation = await client.get_operation(cancelled.operation_name)
        assert operation.done and operation.error is not None and operation.error.code == 1  # CANCELLED

        async def purged() -> Job | None:
            job = await store.get_job(job_id)
            return job if job is not None and job.purged_at is not None else None

        purged_job = await wait_until(purged, within=15, message="the cancelled job's model to be purged")
        assert purged_job.state is State.CANCELLED  # the outcome stays
        # The purger logs model_purged after the commit that the store already shows.
        purge_lines = await daemon.wait_for_events("model_purged", lambda line: line.get("job_id") == job_id)
    events = await store.events(job_id)
    assert kinds(events)[-2:] == ["cancelled", "purged"]
    assert events[-2].detail == {"model_deleted": False}
    assert events[-1].detail == {"policy": "cancelled", "tuned_model": cancelled.tuned_model_name}
    assert cancelled.finished_at is not None
    assert (events[-1].at - cancelled.finished_at).total_seconds() >= 3  # not before purge.cancelled_after
    assert [line["policy"] for line in purge_lines] == ["cancelled"]
    assert remote_model(emulator, cancelled)["deleted_at"] is not None
