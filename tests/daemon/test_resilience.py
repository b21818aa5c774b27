"""The daemon against an unreliable, rate-limited or refusing tuning service: every job still ends where it should.

Injected faults are retried without creating any model twice; the concurrent-tuning quota is respected from
our side; a create whose answer was lost is adopted (409 ALREADY_EXISTS); a permanent error fails only its
job; a failed tuning run fails its job with the service's message.

Where a whole process adds nothing, the daemon runs in-process (`Service` on the test's event loop, stopped as
SIGTERM would); the JSON log is a process's stdout, so the fault test runs the real `tunekeeper run`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.harness import TEST_API_KEY, DaemonProcess, daemon_environment
from tests.jobs import wait_all_terminal
from tests.waiting import wait_until
from tunekeeper.config import (
    DaemonSettings,
    DatabaseSettings,
    GeminiSettings,
    HttpSettings,
    PollSettings,
    PurgeSettings,
    Settings,
)
from tunekeeper.daemon.notify import SystemdNotifier
from tunekeeper.daemon.service import Service
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator, EmulatorConfig
from tunekeeper.states import State, Transition


def examples(count: int = 10) -> list[dict[str, str]]:
    return [{"text_input": str(n), "output": str(n + 1)} for n in range(count)]


def new_job(name: str, *, epochs: int = 5, batch: int = 4, **request: Any) -> NewJob:
    """A valid job: 10 examples, so ceil(10 * epochs / batch) tuning steps."""
    return NewJob(display_name=name, training_data=examples(), epoch_count=epochs, batch_size=batch, **request)


def service_settings(
    database_url: str, base_url: str, *, max_active_jobs: int = 4, max_poll_interval: float = 0.3
) -> Settings:
    """The harness's fast timings (tests/harness.py FAST_SETTINGS), for a daemon run in-process."""
    return Settings(
        database=DatabaseSettings(url=database_url),
        gemini=GeminiSettings(
            base_url=base_url,
            api_key=SecretStr(TEST_API_KEY),
            max_active_jobs=max_active_jobs,
            retry_base_delay=0.01,
            retry_max_delay=0.2,
            max_retries=8,
            creates_per_minute=6000,
            requests_per_minute=600000,
        ),
        daemon=DaemonSettings(
            idle_interval=0.1, lease_seconds=3, retry_base_delay=0.05, retry_max_delay=0.5, shutdown_grace=5
        ),
        poll=PollSettings(min_interval=0.1, max_interval=max_poll_interval),
        purge=PurgeSettings(enabled=False),
        http=HttpSettings(enabled=False),
    )


@contextlib.asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[Service]:
    """The daemon on this event loop; on the way out it is stopped as SIGTERM would, and must exit 0."""
    service = Service(settings, notifier=SystemdNotifier(None))
    task = asyncio.create_task(service.run(), name="service")
    try:
        await wait_until(lambda: service.started.is_set() or task.done(), within=15, message="the service to start")
        if task.done():
            raise AssertionError(f"the service exited at start-up with status {task.result()}")
        yield service
    finally:
        service.stop()
        async with asyncio.timeout(30):
            status = await task
    assert status == 0


def creates_of(emulator: Emulator) -> dict[str, dict[str, int]]:
    by_model: dict[str, dict[str, int]] = emulator.stats()["creates"]["by_model"]
    return by_model


@pytest.fixture
async def faulty_emulator() -> AsyncIterator[Emulator]:
    """10 % 429 and 5 % 503 on every API request. The k-th request gets the k-th seeded draw whatever the
    timing; seed 9 draws both kinds within the first ten requests (seed 0 draws no 429 in its first 60)."""
    config = EmulatorConfig(step_seconds=0.01, faults={"429": 0.10, "503": 0.05}, seed=9, log_requests=False)
    async with Emulator(config) as emu:
        yield emu


async def test_injected_faults_are_retried_and_every_model_is_created_once(
    database_url: str, store: JobStore, faulty_emulator: Emulator, tmp_path: Path
) -> None:
    emulator = faulty_emulator
    ids = [await store.add_job(new_job(f"faulty {n}")) for n in range(20)]
    env = daemon_environment(
        database_url,
        emulator.base_url,
        {"TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS": "8", "TUNEKEEPER_POLL__MAX_INTERVAL": "0.3"},
    )
    async with DaemonProcess(tmp_path, env) as daemon:
        jobs = await wait_all_terminal(store, len(ids), within=60)
        assert await daemon.stop() == 0

    assert [job.state for job in jobs] == [State.SUCCEEDED] * len(ids), [(j.id, j.last_error) for j in jobs]
    stats = emulator.stats()
    assert stats["faults_injected"].get("429", 0) > 0, stats["faults_injected"]
    assert stats["faults_injected"].get("503", 0) > 0, stats["faults_injected"]

    retries = daemon.events("api_retry")
    assert retries, "no api_retry line in the daemon's log although faults were injected"
    for line in retries:
        assert line["level"] == "warning"
        assert {"method", "route", "status", "attempt", "delay", "error"} <= line.keys(), line
        assert line["attempt"] >= 1
        assert line["delay"] >= 0
    assert {line["status"] for line in retries} == {"429", "503"}
    # Every injected fault was answered by one retry (the last attempt of a call always succeeded here).
    assert len(retries) == sum(stats["faults_injected"].values())

    by_model = stats["creates"]["by_model"]
    assert stats["creates"]["accepted"] == len(ids)
    for job in jobs:
        assert job.tuned_model_id is not None
        assert by_model[job.tuned_model_id]["accepted"] == 1, (job.id, by_model.get(job.tuned_model_id))
        assert job.tuned_model_name == f"tunedModels/{job.tuned_model_id}"


async def test_concurrent_tuning_stays_within_the_quota(database_url: str, store: JobStore, emulator: Emulator) -> None:
    # 10 examples, 5 epochs, batch 4: 13 steps of 20 ms; the jobs' quarter seconds of tuning overlap.
    emulator.configure(max_active_tuning=3, step_seconds=0.02)
    ids = [await store.add_job(new_job(f"quota {n}")) for n in range(20)]
    async with running_service(service_settings(database_url, emulator.base_url, max_active_jobs=3)):
        jobs = await wait_all_terminal(store, len(ids), within=60)

    assert [job.state for job in jobs] == [State.SUCCEEDED] * len(ids), [(j.id, j.last_error) for j in jobs]
    stats = emulator.stats()
    # The quota was used (jobs did run side by side) and never exceeded ...
    assert stats["max_concurrent_tuning"] == 3, stats["max_concurrent_tuning"]
    # ... and not because the service turned creates away: none was refused, none retried.
    assert stats["requests"]["by_route_status"]["tunedModels.create"] == {"200": len(ids)}
    assert stats["faults_injected"] == {}
    assert stats["creates"]["attempted"] == stats["creates"]["accepted"] == len(ids)


async def test_a_create_whose_answer_was_lost_is_adopted(
    database_url: str, store: JobStore, emulator: Emulator
) -> None:
    # 503-after: the create takes effect, then its answer is replaced by a 503. Faults hit every route, so they
    # are switched off once the model exists (the retried create meets 409 ALREADY_EXISTS either way).
    emulator.set_faults({"503-after": 1.0})
    job_id = await store.add_job(new_job("lost answer"))
    async with running_service(service_settings(database_url, emulator.base_url)):
        await wait_until(
            lambda: emulator.stats()["creates"]["accepted"] >= 1, within=15, message="the first create to land"
        )
        emulator.set_faults({}, replace=True)
        (job,) = await wait_all_terminal(store, 1, within=30)

    assert job.id == job_id
    assert job.state is State.SUCCEEDED, job.last_error
    assert job.tuned_model_id is not None
    counts = creates_of(emulator)[job.tuned_model_id]
    assert counts["accepted"] == 1, counts
    assert counts["attempted"] >= 2, counts  # the lost one, and the retry that met ALREADY_EXISTS
    assert emulator.stats()["requests"]["by_route_status"]["tunedModels.create"].get("409", 0) >= 1
    accepted = [event for event in await store.events(job_id) if event.kind == Transition.ACCEPTED]
    assert len(accepted) == 1
    assert accepted[0].detail["adopted"] is True
    assert accepted[0].detail["tuned_model"] == f"tunedModels/{job.tuned_model_id}"
    assert job.operation_name is not None
    assert job.operation_name.startswith(f"tunedModels/{job.tuned_model_id}/")


async def test_a_create_that_outlasts_the_lease_keeps_its_job_leased_and_is_sent_once(
    database_url: str, store: JobStore, emulator: Emulator
) -> None:
    settings = service_settings(database_url, emulator.base_url)
    settings = settings.model_copy(update={"daemon": settings.daemon.model_copy(update={"lease_seconds": 1.0})})
    # The create's answer takes 2.5 leases. Unrenewed, the lease would run out mid-call and the dispatcher (it
    # looks for work every 0.1 s) would take the job over and send a second create.
    emulator.configure(latency=(2.5, 2.5))
    job_id = await store.add_job(new_job("slow create"))
    async with running_service(settings):
        (job,) = await wait_all_terminal(store, 1, within=30)

    assert job.state is State.SUCCEEDED, job.last_error
    assert job.tuned_model_id is not None
    assert creates_of(emulator)[job.tuned_model_id] == {"attempted": 1, "accepted": 1}
    claims = [event.detail for event in await store.events(job_id) if event.kind == Transition.CLAIMED]
    assert [claim["attempt"] for claim in claims] == [1]  # claimed once, never taken over


async def test_a_permanent_error_fails_the_job_after_one_attempt_and_the_daemon_goes_on(
    database_url: str, store: JobStore, emulator: Emulator
) -> None:
    bad_id = await store.add_job(new_job("wrong base", base_model="models/no-such-model"))
    async with running_service(service_settings(database_url, emulator.base_url)):
        (bad,) = await wait_all_terminal(store, 1, within=30)
        good_id = await store.add_job(new_job("right base"))
        jobs = await wait_all_terminal(store, 2, within=30)

    assert bad.id == bad_id
    assert bad.state is State.FAILED
    assert bad.last_error is not None
    assert bad.last_error.startswith("INVALID_ARGUMENT (400): "), bad.last_error
    assert "Base model models/no-such-model is not available for tuning" in bad.last_error, bad.last_error
    assert bad.attempts == 1
    assert bad.tuned_model_id is not None
    stats = emulator.stats()
    assert stats["creates"]["by_model"][bad.tuned_model_id] == {"attempted": 1, "accepted": 0}
    assert stats["requests"]["by_route_status"]["tunedModels.create"] == {"400": 1, "200": 1}
    changes = [(e.kind, e.from_state, e.to_state) for e in await store.events(bad_id) if e.to_state is not None]
    assert changes == [
        (Transition.CLAIMED, State.QUEUED, State.SUBMITTING),
        (Transition.SUBMIT_FAILED, State.SUBMITTING, State.FAILED),
    ]
    good = next(job for job in jobs if job.id == good_id)
    assert good.state is State.SUCCEEDED, good.last_error


async def test_a_tuning_run_the_service_fails_fails_its_job_with_the_services_message(
    database_url: str, store: JobStore, emulator: Emulator
) -> None:
    emulator.configure(fail_rate=1.0)
    ids = [await store.add_job(new_job(f"doomed {n}")) for n in range(3)]
    async with running_service(service_settings(database_url, emulator.base_url)):
        jobs = await wait_all_terminal(store, len(ids), within=30)

    by_model = creates_of(emulator)
    for job in jobs:
        assert job.state is State.FAILED, (job.id, job.state, job.last_error)
        assert job.last_error == "Tuning failed because of an internal error. Try again later. (code 13)"
        assert job.tuned_model_id is not None
        assert by_model[job.tuned_model_id]["accepted"] == 1
        events = [e for e in await store.events(job.id) if e.to_state is not None]
        assert events[-1].kind == Transition.TUNING_FAILED
        assert (events[-1].from_state, events[-1].to_state) == (State.TUNING, State.FAILED)
        assert events[-1].detail["error"] == job.last_error
