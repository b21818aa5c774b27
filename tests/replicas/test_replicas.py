"""Several daemon replicas on one PostgreSQL database share the queue: each job is taken by one replica at a time,
the quota holds for all of them together, a dead replica's submissions are taken over once their lease runs
out, and no model is ever created twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness import daemon_environment
from tests.jobs import check_history, wait_all_terminal
from tests.replicas.support import (
    TEN_EXAMPLES,
    CreateArrivals,
    all_events,
    assert_each_model_created_once,
    claims,
    insert_jobs,
    replicas,
    running_emulator,
    state_counts,
)
from tests.waiting import wait_until
from tunekeeper.db.store import JobStore
from tunekeeper.db.tables import tuning_jobs
from tunekeeper.emulator import EmulatorConfig
from tunekeeper.states import ACTIVE, State, Transition

jobs_table = tuning_jobs.c


@pytest.mark.slow
async def test_three_replicas_with_faults_and_a_crash_finish_every_job_once(
    postgres_url: str, engine: AsyncEngine, store: JobStore, tmp_path: Path
) -> None:
    count = 300
    config = EmulatorConfig(step_seconds=0.005, faults={"429": 0.10, "503": 0.05}, seed=11, log_requests=False)
    async with running_emulator(config) as emulator:
        env = daemon_environment(
            postgres_url,
            emulator.base_url,
            {"TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS": "20", "TUNEKEEPER_POLL__MAX_INTERVAL": "0.3"},
        )
        async with replicas(tmp_path, env, ["replica-a", "replica-b", "replica-c"]) as daemons:
            ids = await insert_jobs(engine, count, name="replica run")
            victim = daemons[1]

            # Crash one replica a third of the way through, while it holds submissions in flight.
            async def crash_moment() -> set[int] | None:
                if (await state_counts(store))[State.SUCCEEDED] < count // 3:
                    return None
                held = await leased_submissions(engine, victim.name)
                return held or None

            await wait_until(crash_moment, within=60, interval=0.01, message=f"{victim.name} to hold a submission")
            await victim.kill()
            # What it still held when it died (some may have been accepted between the look and the kill).
            orphaned = await leased_submissions(engine, victim.name)
            await victim.start(within=40)

            jobs = await wait_all_terminal(store, count, within=90, daemons=daemons)
            for daemon in daemons:
                assert await daemon.stop() == 0, daemon.name

    assert [job.id for job in jobs] == ids
    assert [job.state for job in jobs] == [State.SUCCEEDED] * count, [
        (job.id, job.state, job.last_error) for job in jobs if job.state is not State.SUCCEEDED
    ]
    stats = assert_each_model_created_once(emulator, jobs)
    assert stats["faults_injected"].get("429", 0) > 0, stats["faults_injected"]
    assert stats["faults_injected"].get("503", 0) > 0, stats["faults_injected"]

    histories = await all_events(engine)
    for job in jobs:
        check_history(job, histories[job.id])

    # The work was shared, and what the dead replica held was taken over once its leases ran out.
    claimed = [event for job in jobs for event in claims(histories[job.id])]
    owners = Counter(event.detail["owner"] for event in claimed)
    assert len(owners) > 1, owners
    assert set(owners) <= {daemon.name for daemon in daemons}, owners
    for job_id in orphaned:
        takeovers = [event for event in claims(histories[job_id]) if "taken_over_from" in event.detail]
        assert [event.detail["taken_over_from"] for event in takeovers] == [victim.name], (
            job_id,
            claims(histories[job_id]),
        )
    assert victim.starts == 2


async def leased_submissions(engine: AsyncEngine, owner: str) -> set[int]:
    query = sa.select(jobs_table.id).where(jobs_table.state == State.SUBMITTING, jobs_table.lease_owner == owner)
    async with engine.connect() as conn:
        return set((await conn.execute(query)).scalars())


async def active_jobs(engine: AsyncEngine) -> int:
    query = sa.select(sa.func.count()).where(jobs_table.state.in_([state.value for state in ACTIVE]))
    async with engine.connect() as conn:
        found: int = (await conn.execute(query)).scalar_one()
    return found


@pytest.mark.slow
async def test_the_quota_holds_for_all_replicas_together(
    postgres_url: str, engine: AsyncEngine, store: JobStore, tmp_path: Path
) -> None:
    count, quota = 40, 4
    # 10 examples, 5 epochs, batch 4: 13 steps of 20 ms; with four slots the jobs' tuning overlaps.
    config = EmulatorConfig(step_seconds=0.02, max_active_tuning=quota, seed=5, log_requests=False)
    async with running_emulator(config) as emulator:
        env = daemon_environment(
            postgres_url,
            emulator.base_url,
            {"TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS": str(quota), "TUNEKEEPER_POLL__MAX_INTERVAL": "0.3"},
        )
        async with replicas(tmp_path, env, ["quota-a", "quota-b", "quota-c"]) as daemons:
            await insert_jobs(engine, count, name="quota", training_data=TEN_EXAMPLES, epochs=5, batch=4)
            most_active = 0

            async def finished_and_sampled() -> bool:
                nonlocal most_active
                most_active = max(most_active, await active_jobs(engine))
                counts = await state_counts(store)
                return counts[State.SUCCEEDED] + counts[State.FAILED] + counts[State.INVALID] == count

            await wait_until(finished_and_sampled, within=60, interval=0.01, message="every job to finish")
            jobs = await wait_all_terminal(store, count, within=5, daemons=daemons)

    assert [job.state for job in jobs] == [State.SUCCEEDED] * count, [(job.id, job.last_error) for job in jobs]
    stats = assert_each_model_created_once(emulator, jobs)
    # The slots were used side by side, never more than the quota ...
    assert stats["max_concurrent_tuning"] == quota, stats["max_concurrent_tuning"]
    assert 0 < most_active <= quota, most_active
    # ... and not because the service turned creates away: none was refused for quota.
    assert stats["requests"]["by_route_status"]["tunedModels.create"] == {"200": count}
    assert stats["creates"]["attempted"] == count
    histories = await all_events(engine)
    owners = Counter(event.detail["owner"] for job in jobs for event in claims(histories[job.id]))
    assert len(owners) > 1, owners
    assert sum(owners.values()) == count  # one claim per job: nothing was retried or taken over


@pytest.mark.slow
async def test_a_dead_replicas_submissions_are_taken_over_once_the_lease_runs_out(
    postgres_url: str, engine: AsyncEngine, store: JobStore, tmp_path: Path
) -> None:
    count = 4
    # Every request waits a second at the emulator before it takes effect, so that creates stay in flight long
    # enough to kill their sender.
    arrivals = CreateArrivals()
    config = EmulatorConfig(step_seconds=0.01, latency=(1.0, 1.0), seed=2, log_requests=False)
    async with running_emulator(config, arrivals) as emulator:
        env = daemon_environment(postgres_url, emulator.base_url, {"TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS": str(count)})
        async with replicas(tmp_path, env, ["takeover-a", "takeover-b"]) as daemons:
            ids = await insert_jobs(engine, count, name="takeover")

            async def all_sent_by_one_replica() -> str | None:
                jobs = await store.list_jobs()
                owners = {job.lease_owner for job in jobs if job.state is State.SUBMITTING}
                if len(jobs) != count or len(owners) != 1 or arrivals.count < count:
                    return None
                return next(iter(owners)) if all(job.state is State.SUBMITTING for job in jobs) else None

            holder = await wait_until(
                all_sent_by_one_replica, within=15, interval=0.005, message="one replica to send every create"
            )
            victim = next(daemon for daemon in daemons if daemon.name == holder)
            survivor = next(daemon for daemon in daemons if daemon is not victim)
            await victim.kill()
            held = {job.id: job for job in await store.list_jobs()}
            assert {(job.state, job.lease_owner) for job in held.values()} == {(State.SUBMITTING, victim.name)}

            # The survivor takes them over once the leases have run out, not before.
            await wait_until(
                lambda: all_taken_over(engine, ids), within=15, message="the survivor to take every job over"
            )
            emulator.configure(latency=None)
            jobs = await wait_all_terminal(store, count, within=30, daemons=[survivor])
            assert await survivor.stop() == 0

    assert [job.state for job in jobs] == [State.SUCCEEDED] * count, [(job.id, job.last_error) for job in jobs]
    stats = assert_each_model_created_once(emulator, jobs)
    histories = await all_events(engine)
    for job in jobs:
        check_history(job, histories[job.id])
        first, second = claims(histories[job.id])
        assert first.detail == {"attempt": 1, "owner": victim.name}
        assert second.detail == {"attempt": 2, "owner": survivor.name, "taken_over_from": victim.name}
        lease_ends = held[job.id].lease_expires_at
        assert lease_ends is not None
        assert second.at >= lease_ends, (second.at, lease_ends)
        assert (second.at - lease_ends).total_seconds() < 3.0, "the takeover came late"
        # Both replicas sent a create; the model exists once. If the dead replica's create took effect after
        # all, the survivor's met ALREADY_EXISTS and adopted that model instead of making another.
        assert job.tuned_model_id is not None
        assert stats["creates"]["by_model"][job.tuned_model_id] == {"attempted": 2, "accepted": 1}
        created_at = stats["models"][job.tuned_model_id]["created_at"]
        (accepted,) = [event for event in histories[job.id] if event.kind == Transition.ACCEPTED]
        assert accepted.detail["adopted"] is (created_at < second.at.timestamp()), (accepted, created_at, second)


async def all_taken_over(engine: AsyncEngine, ids: list[int]) -> bool:
    histories = await all_events(engine)
    return all(any("taken_over_from" in event.detail for event in claims(histories[job_id])) for job_id in ids)
