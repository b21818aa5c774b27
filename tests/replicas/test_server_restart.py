"""The PostgreSQL server restarts under a busy daemon: the daemon rides it out (logs the outage, reconnects, its
listener too) and every job still ends once, with one model each and an unbroken history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness import DaemonProcess, daemon_environment
from tests.jobs import check_history, wait_all_terminal
from tests.pg import PostgresServer
from tests.replicas.support import (
    TEN_EXAMPLES,
    all_events,
    assert_each_model_created_once,
    insert_jobs,
    running_emulator,
    state_counts,
)
from tests.waiting import wait_until
from tunekeeper.db.engine import make_engine
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import EmulatorConfig
from tunekeeper.states import State


@pytest.fixture
async def own_url(own_postgres: PostgresServer) -> AsyncIterator[str]:
    """A fresh, migrated database on the server this test may restart."""
    name = await asyncio.to_thread(own_postgres.create_database)
    yield own_postgres.url(name)
    await asyncio.to_thread(own_postgres.drop_database, name)


@pytest.fixture
async def own_engine(own_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(own_url)
    yield engine
    await engine.dispose()


@pytest.mark.slow
async def test_a_server_restart_mid_run_loses_no_job_and_creates_no_model_twice(
    own_postgres: PostgresServer, own_url: str, own_engine: AsyncEngine, tmp_path: Path
) -> None:
    count = 50
    store = JobStore(own_engine)
    # 10 examples, 2 epochs, batch 4: 5 steps of 40 ms. Answers take 20-80 ms, so creates and polls are in
    # flight when the server goes away.
    config = EmulatorConfig(step_seconds=0.04, latency=(0.02, 0.08), seed=6, log_requests=False)
    async with running_emulator(config) as emulator:
        env = daemon_environment(
            own_url,
            emulator.base_url,
            {"TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS": "8", "TUNEKEEPER_POLL__MAX_INTERVAL": "0.3"},
        )
        async with DaemonProcess(tmp_path, env) as daemon:
            ids = await insert_jobs(own_engine, count, name="restart", training_data=TEN_EXAMPLES, epochs=2, batch=4)

            async def mid_run() -> dict[State, int] | None:
                counts = await state_counts(store)
                busy = counts[State.SUBMITTING] + counts[State.TUNING]
                return counts if counts[State.SUCCEEDED] >= 10 and busy >= 4 else None

            before = await wait_until(mid_run, within=30, interval=0.01, message="the run to be well under way")
            await asyncio.to_thread(own_postgres.restart)  # fast shutdown: every connection is cut

            jobs = await wait_all_terminal(store, count, within=60, daemons=[daemon])
            # It noticed, and came back by itself: the workers and the listener.
            await wait_until(
                lambda: daemon.events("listener_reconnected"), within=15, message="the listener to reconnect"
            )
            # The workers log the outage on their own, not in step with the listener: wait for their line too.
            await daemon.wait_for_events("database_unavailable")  # the outage was logged
            assert daemon.running
            assert await daemon.stop() == 0
    assert daemon.starts == 1

    assert [job.id for job in jobs] == ids
    assert [job.state for job in jobs] == [State.SUCCEEDED] * count, [
        (job.id, job.state, job.last_error) for job in jobs if job.state is not State.SUCCEEDED
    ]
    assert_each_model_created_once(emulator, jobs)
    histories = await all_events(own_engine)
    for job in jobs:
        check_history(job, histories[job.id])
    assert before[State.SUCCEEDED] < count  # the restart did come mid-run
