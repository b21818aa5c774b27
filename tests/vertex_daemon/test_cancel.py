"""Cancellation on Vertex AI, in every state a job can be in: queued and never sent, submitting (a create in
flight), tuning (running, or waiting for quota), already finished; and a tuning job cancelled outside tunekeeper.

A cancel calls `:cancel` on the tuning job and, with `purge.cancelled_after = 0`, removes what the job left (the
staged training file; a model and endpoint if it got that far). Vertex cancels asynchronously (CANCELLING, then
CANCELLED), so the canceller waits for the end before it removes and records `cancelled`.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness import DaemonProcess
from tests.vertex_daemon.support import (
    client,
    creates_for,
    deployments,
    emulator_config,
    get_job,
    kinds,
    one_pass,
    request_cancel,
    route_count,
    staged,
    tune,
    tuning_state,
    vertex_environment,
    vertex_settings,
    vx_emulator,
    vx_key_file,
    wait_state,
)
from tests.waiting import wait_until
from tunekeeper.daemon.canceller import Canceller
from tunekeeper.daemon.dispatcher import Dispatcher
from tunekeeper.daemon.poller import Poller
from tunekeeper.daemon.service import open_context
from tunekeeper.db.engine import make_engine
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import State

__all__ = ["vx_emulator", "vx_key_file"]  # fixtures, used by name

CANCEL_ROUTE = "tuningJobs.cancel"
NOT_ENDED = {"JOB_STATE_PENDING", "JOB_STATE_RUNNING"}
LONG = {"epoch_count": 50}  # 100 tuning steps: running for a long while at any step time used here


async def test_a_queued_job_is_cancelled_without_sending_anything(
    database_url: str, vx_emulator: Emulator, vx_key_file: Path
) -> None:
    vx_emulator.configure(step_seconds=5)
    settings = vertex_settings(database_url, vx_emulator, vx_key_file, max_active_jobs=1)
    async with open_context(settings) as context:
        store = context.store
        running = await tune(context, "holds the slot", State.TUNING, **LONG)
        waiting = await store.add_job(
            NewJob(display_name="waits for the slot", training_data=[{"text_input": "a", "output": "b"}])
        )
        await one_pass(Dispatcher(context))  # the only slot is taken: it stays queued
        assert (await get_job(store, waiting)).state is State.QUEUED

        await request_cancel(store, waiting, State.QUEUED)
        await one_pass(Canceller(context))

        job = await get_job(store, waiting)
        assert job.state is State.CANCELLED and job.attempts == 0 and not job.cancel_requested
        assert kinds(await store.events(waiting)) == ["cancelled"]
        assert creates_for(vx_emulator, waiting) == {}  # never sent
        assert not await staged(context, waiting)  # nothing uploaded either
        assert route_count(vx_emulator, CANCEL_ROUTE) == 0
        assert (await get_job(store, running.id)).state is State.TUNING  # the other job is untouched
        assert tuning_state(vx_emulator, running.operation_name) in NOT_ENDED


async def test_a_running_job_is_cancelled_and_its_leftovers_removed_once_it_has_ended(
    database_url: str, vx_emulator: Emulator, vx_key_file: Path
) -> None:
    # A step of half a second: the tuning job stays CANCELLING for that long after its cancel.
    vx_emulator.configure(step_seconds=0.5)
    settings = vertex_settings(database_url, vx_emulator, vx_key_file)
    async with open_context(settings) as context:
        store = context.store
        job = await tune(context, "cancel me", State.TUNING, **LONG)
        assert job.operation_name is not None and await staged(context, job.id)

        await request_cancel(store, job.id, State.TUNING)
        await one_pass(Canceller(context))

        cancelled = await get_job(store, job.id)
        assert cancelled.state is State.CANCELLED
        # The port's contract: cancel returns once the work has ended, so the removal saw the end state.
        assert tuning_state(vx_emulator, job.operation_name) == "JOB_STATE_CANCELLED"
        assert route_count(vx_emulator, CANCEL_ROUTE) == 1
        assert not await staged(context, job.id)
        assert cancelled.purged_at is not None and not cancelled.cancel_requested
        events = await store.events(job.id)
        assert kinds(events) == ["claimed", "accepted", "cancel_started", "cancelled"]
        assert events[-1].detail == {"model_deleted": True}
        assert deployments(vx_emulator)["models"] == 0  # a cancelled job leaves no model
        assert creates_for(vx_emulator, job.id) == {"attempted": 1, "accepted": 1}


async def test_a_cancel_that_outlasts_the_wait_leaves_the_job_cancelling_and_is_finished_later(
    database_url: str, vx_emulator: Emulator, vx_key_file: Path
) -> None:
    vx_emulator.configure(step_seconds=30)  # CANCELLING lasts a step: far longer than the wait below
    settings = vertex_settings(database_url, vx_emulator, vx_key_file, vertex={"cancel_wait": 0.3})
    async with open_context(settings) as context:
        store = context.store
        job = await tune(context, "slow to stop", State.TUNING)
        await request_cancel(store, job.id, State.TUNING)
        await one_pass(Canceller(context))

        # Not ended yet: nothing is removed and the job stays `cancelling`, holding its slot.
        stuck = await get_job(store, job.id)
        assert stuck.state is State.CANCELLING
        assert tuning_state(vx_emulator, job.operation_name) == "JOB_STATE_CANCELLING"
        assert await staged(context, job.id)

        vx_emulator.configure(step_seconds=0.01)  # the service finishes the cancel
        canceller = Canceller(context)

        async def finished() -> bool:
            await one_pass(canceller)  # claims it again once the lease has run out
            return (await get_job(store, job.id)).state is State.CANCELLED

        await wait_until(finished, within=15, interval=0.1, message="the cancellation to be finished")
        done = await get_job(store, job.id)
        assert stuck.lease_expires_at is not None
        assert done.finished_at is not None and done.finished_at >= stuck.lease_expires_at
        assert tuning_state(vx_emulator, job.operation_name) == "JOB_STATE_CANCELLED"
        assert not await staged(context, job.id)
        assert done.purged_at is not None
        # A cancel while cancelling changes nothing at the service; the second pass may send one more.
        assert 1 <= route_count(vx_emulator, CANCEL_ROUTE) <= 2


async def test_a_job_waiting_for_quota_is_cancelled_and_leaves_the_queue(database_url: str, tmp_path: Path) -> None:
    config = emulator_config(step_seconds=5, max_active_tuning=1, quota_mode="wait")
    async with Emulator(config) as emulator:
        key_file = emulator.write_service_account_file(tmp_path / "key-wait.json", project="tk-vertex-proof")
        settings = vertex_settings(database_url, emulator, key_file, max_active_jobs=2)
        async with open_context(settings) as context:
            store = context.store
            first = await tune(context, "has the quota", State.TUNING, **LONG)
            second = await tune(context, "waits for quota", State.TUNING, **LONG)
            poller = Poller(context)

            async def waiting() -> bool:
                await one_pass(poller)
                return (await get_job(store, second.id)).sub_state == "WAITING_FOR_QUOTA"

            await wait_until(waiting, within=10, message="the second job to wait for quota")
            assert emulator.stats()["waiting_vertex_tuning"] == 1

            await request_cancel(store, second.id, State.TUNING)
            await one_pass(Canceller(context))

            cancelled = await get_job(store, second.id)
            assert cancelled.state is State.CANCELLED and cancelled.purged_at is not None
            assert tuning_state(emulator, second.operation_name) == "JOB_STATE_CANCELLED"
            assert emulator.stats()["waiting_vertex_tuning"] == 0
            assert not await staged(context, second.id)
            # The job holding the quota carries on.
            assert tuning_state(emulator, first.operation_name) in NOT_ENDED
            assert (await get_job(store, first.id)).state is State.TUNING


async def test_cancelling_a_finished_job_is_ignored_and_touches_nothing(
    database_url: str, vx_emulator: Emulator, vx_key_file: Path
) -> None:
    settings = vertex_settings(database_url, vx_emulator, vx_key_file)
    async with open_context(settings) as context:
        store = context.store
        job = await tune(context, "done already")
        await request_cancel(store, job.id, State.SUCCEEDED)
        await one_pass(Canceller(context))

        after = await get_job(store, job.id)
        assert after.state is State.SUCCEEDED and not after.cancel_requested and after.purged_at is None
        ignored = [event.detail for event in await store.events(job.id) if event.kind == "cancel_ignored"]
        assert ignored == [{"state": "succeeded"}]
        assert route_count(vx_emulator, CANCEL_ROUTE) == 0
        assert deployments(vx_emulator)["models"] == 1 and deployments(vx_emulator)["deployed"] == 1
        assert await staged(context, job.id)


async def test_a_tuning_job_cancelled_outside_tunekeeper_ends_cancelled_with_googles_error(
    database_url: str, vx_emulator: Emulator, vx_key_file: Path
) -> None:
    vx_emulator.configure(step_seconds=0.5)
    settings = vertex_settings(database_url, vx_emulator, vx_key_file, failed_after=3600)
    async with open_context(settings) as context:
        store = context.store
        job = await tune(context, "stopped by hand", State.TUNING, **LONG)
        assert job.operation_name is not None
        await client(context).cancel_tuning_job(job.operation_name)  # as a person would, in the console
        vx_emulator.configure(step_seconds=0.01)

        poller = Poller(context)

        async def ended() -> bool:
            await one_pass(poller)
            return (await get_job(store, job.id)).state is not State.TUNING

        await wait_until(ended, within=10, message="the poller to see the cancellation")
        cancelled = await get_job(store, job.id)
        assert cancelled.state is State.CANCELLED
        assert cancelled.last_error == "cancelled on the service, not through tunekeeper: CANCELED (code 1)"
        events = await store.events(job.id)
        assert events[-1].kind == "cancelled_elsewhere" and events[-1].detail["error"] == cancelled.last_error
        assert tuning_state(vx_emulator, job.operation_name) == "JOB_STATE_CANCELLED"
        assert route_count(vx_emulator, CANCEL_ROUTE) == 1  # only the one sent by hand


async def test_a_cancel_while_the_create_is_in_flight_waits_for_it_then_stops_what_it_started(
    database_url: str, vx_emulator: Emulator, vx_key_file: Path, tmp_path: Path
) -> None:
    """A real daemon: every call takes 1.5 s at the emulator, so the job sits in `submitting` while cancelled."""
    vx_emulator.configure(step_seconds=5, latency=(1.5, 1.5))
    engine = make_engine(database_url)
    store = JobStore(engine)
    try:
        async with DaemonProcess(tmp_path, vertex_environment(database_url, vx_emulator, vx_key_file)) as daemon:
            job_id = await store.add_job(
                NewJob(display_name="slow create", training_data=[{"text_input": "a", "output": "b"}])
            )
            await wait_state(store, job_id, State.SUBMITTING)
            await request_cancel(store, job_id, State.SUBMITTING)
            # Still submitting: the canceller leaves a live submission to its submitter.
            await wait_until(
                lambda: vx_emulator.stats()["tuning_creates"]["attempted"] == 1, within=20, message="the create"
            )
            vx_emulator.configure(latency=None)  # the create already in flight still takes its 1.5 s
            job = await wait_state(store, job_id, State.CANCELLED, within=30)
            await daemon.wait_for_events("job_state_changed", lambda line: line.get("transition") == "cancelled")
            events = await store.events(job_id)
    finally:
        await engine.dispose()

    assert kinds(events) == ["claimed", "accepted", "cancel_started", "cancelled"]
    assert (events[-2].from_state, events[-2].to_state) == (State.TUNING, State.CANCELLING)
    assert creates_for(vx_emulator, job_id) == {"attempted": 1, "accepted": 1}
    assert route_count(vx_emulator, CANCEL_ROUTE) == 1
    assert tuning_state(vx_emulator, job.operation_name) == "JOB_STATE_CANCELLED"
    assert job.purged_at is not None
    objects = vx_emulator.stats()["storage"]
    assert not any(bucket.get("objects") for bucket in objects.values()), objects
