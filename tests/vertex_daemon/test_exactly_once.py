"""Exactly one Vertex AI tuning job per job, when a create's answer is lost after it took effect (503-after,
drop-after) and when the daemon is killed with SIGKILL while a create is in flight.

The service picks a tuning job's id, so nothing like "already exists" saves a retried create: the adapter looks
for the job's labels before every create, and the job adopts what it finds. The faults are set only while the
create is in flight: every request waits 300 ms on the emulator, the create follows the training file's upload,
so a test that sees the file land has that long to arm the fault before the create's draw.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import DaemonProcess
from tests.jobs import check_history, wait_all_terminal
from tests.vertex_daemon.conftest import (
    BUCKET,
    EmulatorFactory,
    job_of,
    pairs,
    running_service,
    tuning_creates,
    vertex_environment,
    vertex_settings,
)
from tests.waiting import wait_until
from tunekeeper.db.records import Job, NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import State, Transition

LATENCY = (0.3, 0.3)


def staged_files(emulator: Emulator) -> int:
    objects: int = emulator.stats()["storage"].get(BUCKET, {}).get("objects", 0)
    return objects


async def succeeded(store: JobStore, job_id: int) -> Job | None:
    job = await job_of(store, job_id)
    assert job.state in (State.QUEUED, State.SUBMITTING, State.TUNING, State.SUCCEEDED), (job.state, job.last_error)
    return job if job.state is State.SUCCEEDED else None


@pytest.mark.parametrize("fault", ["503-after", "drop-after"])
async def test_a_create_whose_answer_is_lost_is_adopted_not_repeated(
    fault: str,
    database_url: str,
    store: JobStore,
    make_emulator: EmulatorFactory,
    key_file_for: Callable[[Emulator], Path],
) -> None:
    async with make_emulator(latency=LATENCY) as emulator:
        key_file = key_file_for(emulator)
        async with running_service(vertex_settings(database_url, emulator, key_file)):
            job_id = await store.add_job(NewJob(display_name=f"lost answer {fault}", training_data=pairs()))
            await wait_until(lambda: staged_files(emulator) == 1, within=20, interval=0.005, message="the upload")
            emulator.set_faults({fault: 1.0})  # the create is waiting out its latency: it meets the fault
            try:
                await wait_until(
                    lambda: tuning_creates(emulator, job_id)["attempted"] >= 1,
                    within=5,
                    interval=0.005,
                    message="the create to arrive",
                )
            finally:
                emulator.set_faults({fault: 0.0})
            job = await wait_until(lambda: succeeded(store, job_id), within=30, message="the job to succeed")
        stats = emulator.stats()

    # The create took effect once, its answer was lost, and the job's next attempt adopted that tuning job.
    assert stats["faults_injected"] == {fault: 1}
    assert tuning_creates(emulator, job_id) == {"attempted": 1, "accepted": 1}
    assert stats["tuning_creates"]["accepted"] == 1
    assert list(stats["tuning_jobs"]) == [job.operation_name]
    events = await store.events(job_id)
    check_history(job, events)
    assert [e.kind for e in events if e.to_state is not None] == [
        Transition.CLAIMED,
        Transition.RETRY,
        Transition.CLAIMED,
        Transition.ACCEPTED,
        Transition.SUCCEEDED,
    ]
    [accepted] = [e for e in events if e.kind == Transition.ACCEPTED]
    assert accepted.detail["adopted"] is True
    assert job.tuned_endpoint_name is not None and job.backend == "vertex"


async def test_sigkill_while_creates_are_in_flight_leaves_one_tuning_job_per_job(
    database_url: str,
    store: JobStore,
    make_emulator: EmulatorFactory,
    key_file_for: Callable[[Emulator], Path],
    tmp_path: Path,
) -> None:
    async with make_emulator(latency=LATENCY) as emulator:
        key_file = key_file_for(emulator)
        ids = [await store.add_job(NewJob(display_name=f"crash {n}", training_data=pairs())) for n in range(3)]
        daemon = DaemonProcess(tmp_path, vertex_environment(database_url, emulator, key_file))
        async with daemon:
            # A training file landed: its job's create is now on its way, waiting out the latency. Kill.
            await wait_until(lambda: staged_files(emulator) >= 1, within=30, interval=0.005, message="an upload")
            await daemon.kill()
            in_flight = [job.id for job in await store.list_jobs() if job.state is State.SUBMITTING]
            assert in_flight, "no create was in flight at the kill"
            await daemon.start()
            jobs = await wait_all_terminal(store, len(ids), within=60, daemons=[daemon])
            assert await daemon.stop() == 0
        stats = emulator.stats()

    assert [job.state for job in jobs] == [State.SUCCEEDED] * len(ids), [(j.id, j.last_error) for j in jobs]
    for job in jobs:
        assert tuning_creates(emulator, job.id)["accepted"] == 1, (job.id, tuning_creates(emulator, job.id))
        assert job.operation_name in stats["tuning_jobs"]
        check_history(job, await store.events(job.id))
    assert stats["tuning_creates"]["accepted"] == len(ids)
    assert len(stats["tuning_jobs"]) == len(ids)
    # The jobs cut off mid-create were taken over by the restarted daemon once their lease ran out.
    for job_id in in_flight:
        claims = [e.detail for e in await store.events(job_id) if e.kind == Transition.CLAIMED]
        assert len(claims) == 2 and "taken_over_from" in claims[1], claims
