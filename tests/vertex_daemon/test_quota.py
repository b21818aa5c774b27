"""Vertex AI's concurrent-tuning quota, met both ways the service may enforce it, with the daemon's own limit
(vertex.max_active_jobs = 4) above the service's (1): a create refused with 429 is requeued with back-off
without using up the job's attempts; a create that waits in WAITING_FOR_QUOTA shows that in the row's
sub_state until a slot frees. Either way both jobs succeed, one after the other."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.jobs import check_history, wait_all_terminal
from tests.vertex_daemon.conftest import (
    EmulatorFactory,
    job_of,
    pairs,
    running_service,
    tuning_creates,
    vertex_settings,
)
from tests.waiting import wait_until
from tunekeeper.db.records import Job, NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import State, Transition

# 10 examples for 40 epochs: 50 tuning steps + 3, about 1.6 s at 30 ms a step: the second job waits that long.
EPOCHS = 40
STEP_SECONDS = 0.03


async def test_a_429_on_create_requeues_the_job_without_using_up_its_attempts(
    database_url: str, store: JobStore, make_emulator: EmulatorFactory, key_file_for: Callable[[Emulator], Path]
) -> None:
    async with make_emulator(max_active_tuning=1, quota_mode="reject", step_seconds=STEP_SECONDS) as emulator:
        key_file = key_file_for(emulator)
        first = await store.add_job(NewJob(display_name="first", training_data=pairs(), epoch_count=EPOCHS))
        second = await store.add_job(NewJob(display_name="second", training_data=pairs(), epoch_count=EPOCHS))
        # Two attempts only: had the refusals counted, the second job would have failed at the second one.
        settings = vertex_settings(
            database_url,
            emulator,
            key_file,
            {"max_active_jobs": "4"},
            daemon={
                "idle_interval": 0.1,
                "lease_seconds": 3,
                "retry_base_delay": 0.05,
                "retry_max_delay": 0.2,
                "max_attempts": 2,
                "shutdown_grace": 5,
            },
        )
        async with running_service(settings):
            jobs = await wait_all_terminal(store, 2, within=60)
        stats = emulator.stats()

    assert [job.state for job in jobs] == [State.SUCCEEDED] * 2, [(j.id, j.last_error) for j in jobs]
    assert stats["max_concurrent_vertex_tuning"] == 1
    refused = stats["requests"]["by_route_status"]["tuningJobs.create"].get("429", 0)
    assert refused >= 3, stats["requests"]["by_route_status"]["tuningJobs.create"]
    for job_id in (first, second):
        assert tuning_creates(emulator, job_id)["accepted"] == 1

    # The job that met the quota was requeued once per refusal, each time with a refund, and never gave up.
    waited = await job_of(store, second if tuning_creates(emulator, second)["attempted"] > 1 else first)
    events = await store.events(waited.id)
    check_history(waited, events)
    retries = [e.detail for e in events if e.kind == Transition.RETRY]
    assert len(retries) >= 3, retries
    assert all("RESOURCE_EXHAUSTED (429)" in r["error"] and r["refunded"] for r in retries), retries
    assert waited.attempts <= 2


async def test_a_create_that_waits_for_quota_shows_it_in_the_sub_state(
    database_url: str, store: JobStore, make_emulator: EmulatorFactory, key_file_for: Callable[[Emulator], Path]
) -> None:
    async with make_emulator(max_active_tuning=1, quota_mode="wait", step_seconds=STEP_SECONDS) as emulator:
        key_file = key_file_for(emulator)
        first = await store.add_job(NewJob(display_name="first", training_data=pairs(), epoch_count=EPOCHS))
        second = await store.add_job(NewJob(display_name="second", training_data=pairs(), epoch_count=EPOCHS))
        settings = vertex_settings(database_url, emulator, key_file, {"max_active_jobs": "4"})
        async with running_service(settings):

            async def one_waiting() -> Job | None:
                for job_id in (first, second):
                    job = await job_of(store, job_id)
                    if job.state is State.TUNING and job.sub_state == "WAITING_FOR_QUOTA":
                        return job
                return None

            waiting = await wait_until(one_waiting, within=20, message="a job waiting for quota in its sub_state")
            assert emulator.stats()["waiting_vertex_tuning"] == 1
            jobs = await wait_all_terminal(store, 2, within=60)
        stats = emulator.stats()

    assert [job.state for job in jobs] == [State.SUCCEEDED] * 2, [(j.id, j.last_error) for j in jobs]
    assert all(job.sub_state is None for job in jobs)
    assert stats["max_concurrent_vertex_tuning"] == 1
    assert stats["requests"]["by_route_status"]["tuningJobs.create"] == {"200": 2}
    for job_id in (first, second):
        assert tuning_creates(emulator, job_id) == {"attempted": 1, "accepted": 1}
    # The waiting job started only once the other had finished.
    other = next(job for job in jobs if job.id != waiting.id)
    done = await job_of(store, waiting.id)
    assert other.finished_at is not None and done.finished_at is not None
    assert done.finished_at > other.finished_at
    events = await store.events(waiting.id)
    check_history(done, events)
    assert [e.kind for e in events if e.to_state is not None] == [
        Transition.CLAIMED,
        Transition.ACCEPTED,
        Transition.SUCCEEDED,
    ]
