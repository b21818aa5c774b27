"""Polling Vertex AI tuning jobs: the state, the sub-state and the progress (completed steps of the total) reach the
row as the job runs; success brings the model and its endpoint; a job that fails on the service fails the row
with Google's error message."""

from __future__ import annotations

from pathlib import Path

from tests.vertex_daemon.support import (
    ENDPOINT_NAME,
    MODEL_NAME,
    PAIRS,
    client,
    get_job,
    one_pass,
    tune,
    vertex_settings,
    vx_emulator,
    vx_key_file,
)
from tests.waiting import wait_until
from tunekeeper.daemon.dispatcher import Dispatcher
from tunekeeper.daemon.poller import Poller
from tunekeeper.daemon.service import open_context
from tunekeeper.db.records import NewJob
from tunekeeper.emulator import Emulator
from tunekeeper.states import State

__all__ = ["vx_emulator", "vx_key_file"]  # fixtures, used by name

# The emulator's phases, in order: one step pending, one processing the dataset, the tuning steps, one step of
# post-processing. The row shows the state's name while no sub-state is given (pending).
PHASES = ["PENDING", "PROCESSING_DATASET", "TUNING", "POST_PROCESSING"]


async def test_states_sub_states_and_progress_reach_the_row(
    database_url: str, vx_emulator: Emulator, vx_key_file: Path
) -> None:
    # 16 examples, 3 epochs, batch 8: 6 tuning steps of 0.4 s; polls at most 0.2 s apart see every phase.
    vx_emulator.configure(step_seconds=0.4)
    settings = vertex_settings(database_url, vx_emulator, vx_key_file)
    async with open_context(settings) as context:
        store = context.store
        job_id = await store.add_job(NewJob(display_name="watched", training_data=PAIRS, epoch_count=3))
        await one_pass(Dispatcher(context))
        poller = Poller(context)
        seen: list[tuple[State, str | None, int | None, int | None, float | None]] = []

        async def finished() -> bool:
            await one_pass(poller)
            job = await get_job(store, job_id)
            row = (job.state, job.sub_state, job.completed_steps, job.total_steps, job.progress_percent)
            if not seen or seen[-1] != row:
                seen.append(row)
            return job.state is not State.TUNING

        await wait_until(finished, within=20, message="the job to finish")
        job = await get_job(store, job_id)

    assert job.state is State.SUCCEEDED, job.last_error
    running = [row for row in seen if row[0] is State.TUNING]
    sub_states = [row[1] for row in running]
    # Every phase was seen, in the service's order, and never went back.
    distinct = [state for n, state in enumerate(sub_states) if state is not None and state not in sub_states[:n]]
    assert [state for state in distinct if state in PHASES] == [p for p in PHASES if p in distinct], sub_states
    assert {"PROCESSING_DATASET", "TUNING"} <= set(distinct), sub_states
    # Progress: completed steps of the total, never backwards, and the percent is that share.
    steps = [row[2] or 0 for row in running]
    assert steps == sorted(steps), steps
    assert any(0 < completed < 6 for completed in steps), running  # seen part-way
    for _, _, completed, total, percent in running:
        if total:
            assert total == 6, running
            assert percent is not None and abs(percent - (completed or 0) * 100 / total) < 0.01, running
    # The end: all steps, the model and its endpoint, no sub-state left over.
    assert (job.sub_state, job.completed_steps, job.total_steps, job.progress_percent) == (None, 6, 6, 100.0)
    assert job.tuned_model_name is not None and MODEL_NAME.fullmatch(job.tuned_model_name), job.tuned_model_name
    assert job.tuned_endpoint_name is not None and ENDPOINT_NAME.fullmatch(job.tuned_endpoint_name)
    assert job.backend == "vertex" and job.last_error is None
    remote = vx_emulator.stats()["tuning_jobs"][job.operation_name]
    assert remote["state"] == "JOB_STATE_SUCCEEDED" and remote["gets"] >= len(seen)


async def test_a_job_that_fails_on_the_service_fails_with_googles_message(
    database_url: str, vx_emulator: Emulator, vx_key_file: Path
) -> None:
    vx_emulator.configure(fail_rate=1.0)
    settings = vertex_settings(database_url, vx_emulator, vx_key_file)
    async with open_context(settings) as context:
        job = await tune(context, "doomed", State.FAILED)
        assert job.operation_name is not None
        remote = await client(context).get_tuning_job(job.operation_name)
        events = await context.store.events(job.id)

    assert remote.error is not None and remote.error.code == 13
    assert job.last_error == f"{remote.error.message} (code 13)"
    assert remote.error.message and remote.error.message in job.last_error
    assert [event.kind for event in events if event.kind != "progress"] == ["claimed", "accepted", "tuning_failed"]
    assert events[-1].detail["error"] == job.last_error
    assert job.tuned_model_name is None and job.tuned_endpoint_name is None
    assert vx_emulator.stats()["deployments"]["models"] == 0
