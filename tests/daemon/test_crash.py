"""The real daemon process stopped hard (SIGKILL) or gracefully (SIGTERM) mid-work, and started again.

After any number of crashes every job still ends, no model is created twice, and each job's history in
job_events is one unbroken walk through the state machine. A graceful stop leaves tuning jobs to be resumed:
the restarted daemon polls them from the stored `next_poll_at` and never submits them again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.harness import DaemonProcess, daemon_environment
from tests.jobs import check_history, wait_all_terminal
from tests.waiting import wait_until
from tunekeeper.db.records import Job, NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.db.tables import job_events, tuning_jobs
from tunekeeper.emulator import Emulator, EmulatorConfig
from tunekeeper.states import TERMINAL, State, Transition


def new_job(name: str, *, epochs: int = 5, batch: int = 2) -> NewJob:
    """10 examples: ceil(10 * epochs / batch) tuning steps (25 by default)."""
    training_data = [{"text_input": str(n), "output": str(n + 1)} for n in range(10)]
    return NewJob(display_name=name, training_data=training_data, epoch_count=epochs, batch_size=batch)


async def state_counts(store: JobStore) -> dict[State, int]:
    counts = await store.count_by_state()
    return {state: counts.get(state, 0) for state in State}


async def transitions_recorded(store: JobStore) -> int:
    async with store.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(job_events).where(job_events.c.to_state.is_not(None))
        count: int = (await conn.execute(query)).scalar_one()
    return count


@pytest.fixture
async def flaky_emulator() -> AsyncIterator[Emulator]:
    """Slow-ish answers (creates stay in flight long enough to be cut off), transient faults, and lost answers
    (`503-after`, `drop-after`: the create takes effect, the answer never arrives)."""
    config = EmulatorConfig(
        step_seconds=0.02,
        latency=(0.02, 0.1),
        faults={"429": 0.05, "503": 0.03, "503-after": 0.08, "drop-after": 0.07},
        seed=3,
        log_requests=False,
    )
    async with Emulator(config) as emu:
        yield emu


# Each crash waits for some fresh progress since the last start, then for a moment of its own kind.
Moment = Callable[[Mapping[State, int]], bool]
CRASH_MOMENTS: list[tuple[str, Moment]] = [
    ("a create in flight", lambda c: c[State.SUBMITTING] >= 1),
    ("jobs tuning", lambda c: c[State.TUNING] >= 2),
    ("a create in flight, some jobs done", lambda c: c[State.SUBMITTING] >= 1 and c[State.SUCCEEDED] >= 8),
]
JOBS = 30
FRESH_TRANSITIONS = 6


@pytest.mark.slow
async def test_sigkill_at_any_moment_loses_no_job_and_creates_no_model_twice(
    database_url: str, store: JobStore, flaky_emulator: Emulator, tmp_path: Path
) -> None:
    emulator = flaky_emulator
    ids = [await store.add_job(new_job(f"crash test {n}")) for n in range(JOBS)]
    env = daemon_environment(
        database_url,
        emulator.base_url,
        {"TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS": "8", "TUNEKEEPER_POLL__MAX_INTERVAL": "0.3"},
    )
    crashed_at: list[dict[State, int]] = []
    async with DaemonProcess(tmp_path, env) as daemon:
        for description, moment in CRASH_MOMENTS:
            before = await transitions_recorded(store)

            async def crash_moment(moment: Moment = moment, before: int = before) -> dict[State, int] | None:
                if await transitions_recorded(store) < before + FRESH_TRANSITIONS:
                    return None
                counts = await state_counts(store)
                return counts if moment(counts) else None

            counts = await wait_until(crash_moment, within=30, interval=0.005, message=f"a crash moment: {description}")
            await daemon.kill()
            crashed_at.append(counts)
            await daemon.start()
        jobs = await wait_all_terminal(store, JOBS, within=90)
        assert await daemon.stop() == 0
    assert daemon.starts == len(CRASH_MOMENTS) + 1
    assert [job.id for job in jobs] == ids

    # Every job ends, and ends well: crashes and lost answers are all recoverable.
    assert [job.state for job in jobs] == [State.SUCCEEDED] * JOBS, [
        (job.id, job.state, job.last_error) for job in jobs if job.state is not State.SUCCEEDED
    ]

    # No model was created twice, every succeeded job has exactly one, and the service has no stray models.
    stats = emulator.stats()
    by_model: dict[str, dict[str, int]] = stats["creates"]["by_model"]
    assert all(counts["accepted"] <= 1 for counts in by_model.values()), by_model
    for job in jobs:
        assert job.tuned_model_id is not None
        assert by_model[job.tuned_model_id]["accepted"] == 1, (job.id, by_model.get(job.tuned_model_id))
        assert job.tuned_model_name == f"tunedModels/{job.tuned_model_id}"
    assert set(stats["models"]) == {job.tuned_model_id for job in jobs}
    assert stats["creates"]["accepted"] == JOBS

    # Each job's audit trail is one unbroken path through the state machine.
    histories = {job.id: await store.events(job.id) for job in jobs}
    for job in jobs:
        check_history(job, histories[job.id])

    # The run did exercise what it is about: creates cut off by a crash and taken over once their lease ran
    # out, and creates whose answer was lost adopted through ALREADY_EXISTS.
    claims = [e for events in histories.values() for e in events if e.kind == Transition.CLAIMED]
    accepts = [e for events in histories.values() for e in events if e.kind == Transition.ACCEPTED]
    assert any("taken_over_from" in e.detail for e in claims), crashed_at
    assert any(e.detail["adopted"] for e in accepts)
    assert stats["requests"]["by_route_status"]["tunedModels.create"].get("409", 0) >= 1


@pytest.mark.slow
async def test_progress_is_recorded_and_a_restart_resumes_polling_from_the_stored_time(
    database_url: str, store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    # 10 examples, 5 epochs, batch 1: 50 steps of 60 ms, an epoch (a snapshot with its loss) every 0.6 s.
    emulator.configure(step_seconds=0.06)
    job_id = await store.add_job(new_job("slow and steady", batch=1))
    env = daemon_environment(database_url, emulator.base_url, {"TUNEKEEPER_POLL__MAX_INTERVAL": "0.25"})
    daemon = DaemonProcess(tmp_path, env)
    seen: list[tuple[float, int]] = []  # (progress_percent, completed_steps) as the database showed them

    async def watch() -> Job | None:
        job = await store.get_job(job_id)
        assert job is not None
        if job.state is State.TUNING and job.progress_percent is not None and job.completed_steps is not None:
            reading = (job.progress_percent, job.completed_steps)
            if not seen or seen[-1] != reading:
                seen.append(reading)
        return job if job.state is State.TUNING and (job.progress_percent or 0) >= 40 else None

    async with daemon:
        await wait_until(watch, within=30, interval=0.01, message="the job to be 40 % through tuning")
        await wait_until(
            lambda: progress_events(store, job_id), within=10, message="a progress event in the job's timeline"
        )
        assert await daemon.stop() == 0  # SIGTERM, mid-tuning

    stopped = await store.get_job(job_id)
    assert stopped is not None
    assert stopped.state is State.TUNING, "a graceful stop must leave a tuning job to the next start"
    assert stopped.next_poll_at is not None
    assert stopped.operation_name is not None
    # Progress rose in several steps while tuning, and the step counts came along.
    percents = [percent for percent, _ in seen]
    steps = [completed for _, completed in seen]
    assert len(seen) >= 3, seen
    assert percents == sorted(percents), seen
    assert steps == sorted(steps), seen
    assert 0 < steps[-1] < 50, seen
    assert stopped.total_steps == 50
    assert stopped.completed_steps is not None
    assert stopped.completed_steps > 0

    # While the daemon is down, move the stored poll time a little into the future: the restarted daemon must
    # wait for it instead of polling everything at start-up.
    resume_at = datetime.now(UTC) + timedelta(seconds=2.0)
    async with store.engine.begin() as conn:
        await conn.execute(tuning_jobs.update().where(tuning_jobs.c.id == job_id).values(next_poll_at=resume_at))
    model_id = stopped.tuned_model_id
    assert model_id is not None
    gets_before = operation_gets(emulator, model_id)

    async with daemon:  # starts again
        first_poll = await wait_until(
            lambda: datetime.now(UTC) if operation_gets(emulator, model_id) > gets_before else None,
            within=15,
            interval=0.01,
            message="the restarted daemon to poll the job",
        )
        assert first_poll >= resume_at, f"polled at {first_poll}, before the stored next_poll_at {resume_at}"

        async def succeeded() -> Job | None:
            job = await store.get_job(job_id)
            return job if job is not None and job.state in TERMINAL else None

        done = await wait_until(succeeded, within=30, message="the job to finish")
        assert await daemon.stop() == 0

    assert done.state is State.SUCCEEDED, done.last_error
    assert done.progress_percent == 100.0
    assert done.completed_steps == 50
    assert done.operation_name == stopped.operation_name
    # One create in all: the restart did not submit the job again.
    assert emulator.stats()["creates"]["by_model"][model_id] == {"attempted": 1, "accepted": 1}
    events = await store.events(job_id)
    assert [e.kind for e in events if e.to_state is not None] == [
        Transition.CLAIMED,
        Transition.ACCEPTED,
        Transition.SUCCEEDED,
    ]
    check_history(done, events)
    progress = [e.detail for e in events if e.kind == "progress"]
    assert progress, "no progress event in job_events"
    for detail in progress:
        assert isinstance(detail["mean_loss"], float)
        assert detail["mean_loss"] > 0
        assert 0 < detail["percent"] < 100
    epochs = [detail["epoch"] for detail in progress]
    assert epochs == sorted(set(epochs)), progress
    assert isinstance(done.snapshots, list)
    assert len(done.snapshots) == 5
    assert done.mean_loss == done.snapshots[-1]["meanLoss"]


async def progress_events(store: JobStore, job_id: int) -> list[dict[str, Any]]:
    return [event.detail for event in await store.events(job_id) if event.kind == "progress"]


def operation_gets(emulator: Emulator, model_id: str) -> int:
    gets: int = emulator.stats()["models"][model_id]["operation_gets"]
    return gets
