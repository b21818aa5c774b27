"""The daemon on Vertex AI against a service that fails: injected 429s, 503s and dropped connections on every
route (storage, tuning jobs, endpoints), and access tokens that expire mid-run. Every job still succeeds, with
exactly one tuning job each, and evaluation still reaches the endpoint."""

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
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import State, Transition

# The routes one Vertex AI job uses, each of which must have met faults and got through them.
ROUTES = (
    "tuningJobs.list",  # looking for earlier work before a create
    "storage.objects.insert",  # staging the training file
    "tuningJobs.create",
    "tuningJobs.get",  # polling
    "endpoints.generateContent",  # evaluating
)
FAULTS = ("429", "503", "drop")
EVAL = [{"text_input": str(n), "output": str(n + 1)} for n in range(3)]


async def evaluated(store: JobStore, ids: list[int]) -> bool:
    return all([(await job_of(store, job_id)).eval_score is not None for job_id in ids])


async def test_faults_on_every_route_are_retried_and_each_job_gets_one_tuning_job(
    database_url: str, store: JobStore, make_emulator: EmulatorFactory, key_file_for: Callable[[Emulator], Path]
) -> None:
    # Half of all requests fail before taking effect: with a dozen jobs, each route above meets every kind many
    # times over. The client retries up to 20 times, so no call runs out of retries by bad luck (0.5 ** 21).
    faults = {"429": 0.2, "503": 0.2, "drop": 0.1}
    async with make_emulator(faults=faults, seed=11) as emulator:
        key_file = key_file_for(emulator)
        ids = [
            await store.add_job(NewJob(display_name=f"faulty {n}", training_data=pairs(), eval_data=EVAL))
            for n in range(12)
        ]
        settings = vertex_settings(database_url, emulator, key_file, {"max_retries": "20"})
        # Creates are never retried blindly and each failed one costs its job an attempt, as does a lease that
        # lapses on a loaded machine: room enough that no job runs out by bad luck (this test is about the routes).
        settings = settings.model_copy(update={"daemon": settings.daemon.model_copy(update={"max_attempts": 40})})
        async with running_service(settings):
            jobs = await wait_all_terminal(store, len(ids), within=90)
            await wait_until(lambda: evaluated(store, ids), within=30, message="every evaluation")
        stats = emulator.stats()

    assert [job.state for job in jobs] == [State.SUCCEEDED] * len(ids), [(j.id, j.last_error) for j in jobs]
    for job_id in ids:
        job = await job_of(store, job_id)
        assert tuning_creates(emulator, job_id)["accepted"] == 1, (job_id, tuning_creates(emulator, job_id))
        assert job.eval_score == 1.0, (job_id, job.eval_results)
        check_history(job, await store.events(job_id))
    assert stats["tuning_creates"]["accepted"] == len(ids)
    assert len(stats["tuning_jobs"]) == len(ids)

    # Every route met faults of every kind and still got its work done.
    by_route_status: dict[str, dict[str, int]] = stats["requests"]["by_route_status"]
    for route in ROUTES:
        statuses = by_route_status.get(route, {})
        assert statuses.get("200", 0) >= len(ids), (route, statuses)
        assert any(statuses.get(kind, 0) for kind in FAULTS), (route, statuses)
    assert all(stats["faults_injected"].get(kind, 0) > 0 for kind in FAULTS), stats["faults_injected"]


async def test_tokens_that_expire_mid_run_are_renewed_and_no_job_sees_a_401(
    database_url: str, store: JobStore, make_emulator: EmulatorFactory, key_file_for: Callable[[Emulator], Path]
) -> None:
    # Tokens live one second; each job tunes for about three (60 steps of 50 ms), polled all along.
    async with make_emulator(token_lifetime=1, step_seconds=0.05) as emulator:
        key_file = key_file_for(emulator)
        ids = [
            await store.add_job(
                NewJob(display_name=f"short tokens {n}", training_data=pairs(), epoch_count=45, eval_data=EVAL)
            )
            for n in range(3)
        ]
        # Polled all along: with a known step rate the planner would otherwise wait until near the finish.
        settings = vertex_settings(database_url, emulator, key_file, vertex={"poll_max_interval_with_rate": "0.3"})
        async with running_service(settings):
            jobs = await wait_all_terminal(store, len(ids), within=60)
            await wait_until(lambda: evaluated(store, ids), within=30, message="every evaluation")
        stats = emulator.stats()

    assert [job.state for job in jobs] == [State.SUCCEEDED] * len(ids), [(j.id, j.last_error) for j in jobs]
    tuning_seconds = [(job.finished_at - job.submitted_at).total_seconds() for job in jobs if job.submitted_at]
    assert max(tuning_seconds) > 2, tuning_seconds  # the run did outlive several tokens
    assert stats["requests"]["by_route"]["oauth2.token"] >= 3, stats["requests"]["by_route"]
    for job in jobs:
        assert (await job_of(store, job.id)).eval_score == 1.0
        events = await store.events(job.id)
        # Not one attempt was lost to an expired token: one claim, one acceptance, success.
        assert [e.kind for e in events if e.to_state is not None] == [
            Transition.CLAIMED,
            Transition.ACCEPTED,
            Transition.SUCCEEDED,
        ], [(e.kind, e.detail) for e in events]
        assert not [e.detail for e in events if "error" in e.detail or "UNAUTHENTICATED" in str(e.detail)]
        assert tuning_creates(emulator, job.id) == {"attempted": 1, "accepted": 1}
