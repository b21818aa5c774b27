"""Several `tunekeeper run` replicas on one PostgreSQL database with backend = "vertex": a batch of jobs all
succeed with exactly one tuning job per job label, and a replica killed with -9 mid-create leaves no duplicate
(the survivor finds the dead replica's tuning job by its labels and adopts it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.jobs import check_history, wait_all_terminal
from tests.replicas.conftest import engine, store
from tests.replicas.support import all_events, claims, replicas
from tests.vertex_daemon.support import emulator_config, emulator_with, insert_jobs, vertex_environment
from tests.waiting import wait_until
from tunekeeper.db.records import Job
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import State, Transition

__all__ = ["engine", "store"]  # fixtures, used by name


class HeldCreateAnswers:
    """Lets Vertex creates take effect at the emulator but holds their answers until released: a replica killed
    meanwhile made a tuning job it never heard of."""

    def __init__(self) -> None:
        self.landed = 0
        self.release = asyncio.Event()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if request.method == "POST" and request.path.rstrip("/").endswith("/tuningJobs") and response.status == 200:
            self.landed += 1
            async with asyncio.timeout(60):
                await self.release.wait()
        return response


def assert_one_tuning_job_each(emulator: Emulator, jobs: list[Job]) -> None:
    stats = emulator.stats()
    by_label = stats["tuning_creates"]["by_label"]
    for job in jobs:
        assert by_label[f"tunekeeper-job={job.id}"]["accepted"] == 1, (job.id, by_label.get(f"tunekeeper-job={job.id}"))
    assert stats["tuning_creates"]["accepted"] == len(jobs)
    names = [job.operation_name for job in jobs]
    assert len(set(names)) == len(jobs) and set(names) == set(stats["tuning_jobs"])


@pytest.mark.slow
async def test_three_replicas_run_a_batch_with_one_tuning_job_per_job(
    postgres_url: str, engine: AsyncEngine, store: JobStore, tmp_path: Path
) -> None:
    count = 24
    async with emulator_with(emulator_config(step_seconds=0.02, faults={"503": 0.05})) as emulator:
        key_file = emulator.write_service_account_file(tmp_path / "key.json", project="tk-vertex-proof")
        env = vertex_environment(
            postgres_url,
            emulator,
            key_file,
            {"TUNEKEEPER_VERTEX__MAX_ACTIVE_JOBS": "6", "TUNEKEEPER_VERTEX__MAX_CONCURRENT_CREATES": "3"},
        )
        async with replicas(tmp_path, env, ["vx-a", "vx-b", "vx-c"]) as daemons:
            await insert_jobs(engine, count, name="vertex batch")
            jobs = await wait_all_terminal(store, count, within=90, daemons=daemons)
            for daemon in daemons:
                assert await daemon.stop() == 0, daemon.name

    assert [job.state for job in jobs] == [State.SUCCEEDED] * count, [(job.id, job.last_error) for job in jobs]
    assert all(job.backend == "vertex" and job.tuned_endpoint_name for job in jobs)
    assert_one_tuning_job_each(emulator, jobs)
    assert emulator.stats()["faults_injected"].get("503", 0) > 0
    histories = await all_events(engine)
    owners = set()
    for job in jobs:
        check_history(job, histories[job.id])
        owners |= {event.detail["owner"] for event in claims(histories[job.id])}
    assert len(owners) > 1, owners  # the work was shared


@pytest.mark.slow
async def test_a_replica_killed_mid_create_leaves_no_duplicate(
    postgres_url: str, engine: AsyncEngine, store: JobStore, tmp_path: Path
) -> None:
    count = 4
    held = HeldCreateAnswers()
    async with emulator_with(emulator_config(step_seconds=0.01), held.middleware) as emulator:
        key_file = emulator.write_service_account_file(tmp_path / "key.json", project="tk-vertex-proof")
        env = vertex_environment(
            postgres_url,
            emulator,
            key_file,
            {"TUNEKEEPER_VERTEX__MAX_ACTIVE_JOBS": str(count), "TUNEKEEPER_VERTEX__MAX_CONCURRENT_CREATES": str(count)},
        )
        async with replicas(tmp_path, env, ["vx-kill-a", "vx-kill-b"]) as daemons:
            ids = await insert_jobs(engine, count, name="killed mid create")

            async def every_create_landed_unanswered() -> list[Job] | None:
                jobs = await store.list_jobs()
                if len(jobs) != count or held.landed < count or any(j.state is not State.SUBMITTING for j in jobs):
                    return None
                return jobs

            submitting = await wait_until(
                every_create_landed_unanswered, within=30, interval=0.01, message="every create to land unanswered"
            )
            victim = next(daemon for daemon in daemons if daemon.name == submitting[0].lease_owner)
            survivor = next(daemon for daemon in daemons if daemon is not victim)
            orphaned = {job.id for job in submitting if job.lease_owner == victim.name}
            await victim.kill()
            held.release.set()
            jobs = await wait_all_terminal(store, count, within=60, daemons=[survivor])
            assert await survivor.stop() == 0

    assert [job.id for job in jobs] == ids
    assert [job.state for job in jobs] == [State.SUCCEEDED] * count, [(job.id, job.last_error) for job in jobs]
    assert_one_tuning_job_each(emulator, jobs)
    # No create was sent again: the survivor found each dead replica's tuning job by its labels and adopted it.
    stats = emulator.stats()
    assert stats["tuning_creates"]["attempted"] == count, stats["tuning_creates"]
    histories = await all_events(engine)
    for job in jobs:
        check_history(job, histories[job.id])
        (accepted,) = [event for event in histories[job.id] if event.kind == Transition.ACCEPTED]
        if job.id not in orphaned:
            assert accepted.detail["adopted"] is False, accepted
            continue
        first, second = claims(histories[job.id])
        assert first.detail["owner"] == victim.name
        assert second.detail["owner"] == survivor.name and second.detail["taken_over_from"] == victim.name
        assert accepted.detail["adopted"] is True, accepted
    assert orphaned, "the victim held no create"
