"""An idle daemon on PostgreSQL reacts to a new job or a cancel request at once (LISTEN/NOTIFY), not at its next
look at the queue, and keeps doing so after its listening connection is cut."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness import DaemonProcess, daemon_environment
from tests.pg import PostgresServer
from tests.replicas.support import TEN_EXAMPLES, claims, insert_jobs, running_emulator
from tests.waiting import wait_until
from tunekeeper.db.listener import APPLICATION_NAME
from tunekeeper.db.records import Job
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import EmulatorConfig
from tunekeeper.states import State

# Far longer than the test: whatever the daemon does within it, it did not find by looking at the queue.
IDLE_INTERVAL = 30.0
# A pickup this quick can only come from a notification.
PROMPT = 5.0


async def test_an_idle_daemon_reacts_to_inserts_and_cancels_at_once_also_after_its_listener_reconnects(
    postgres_server: PostgresServer, postgres_url: str, engine: AsyncEngine, store: JobStore, tmp_path: Path
) -> None:
    # 10 examples, 5 epochs, batch 1: 50 steps of half a second, so the jobs are still tuning when cancelled.
    config = EmulatorConfig(step_seconds=0.5, seed=4, log_requests=False)
    async with running_emulator(config) as emulator:
        env = daemon_environment(
            postgres_url, emulator.base_url, {"TUNEKEEPER_DAEMON__IDLE_INTERVAL": str(IDLE_INTERVAL)}
        )
        async with DaemonProcess(tmp_path, env) as daemon:
            # The first job may meet the daemon's look at the queue at start-up; the second surely cannot.
            first = await insert_and_see_it_claimed(engine, store, "first")
            second = await insert_and_see_it_claimed(engine, store, "second")

            cancelled = await cancel_and_see_it_done(engine, store, second)
            assert cancelled.tuned_model_id is not None
            assert emulator.stats()["models"][cancelled.tuned_model_id]["deleted_at"] is not None

            # The request arrives while another transaction holds the job's row for a moment, so the claim that
            # the notification triggers passes the row over: the canceller must look again, not wait 30 s.
            async with holding_row(engine, first.id, seconds=0.5):
                await request_cancel(engine, first.id)
            await cancel_and_see_it_done(engine, store, first, requested_already=True)

            # Cut the listening connection: the daemon notices, reconnects, and reacts as promptly as before.
            database = make_url(postgres_url).database
            before = await listener_pids(postgres_server, database)
            assert len(before) == 1, f"expected one listening connection, found {before}"
            assert await asyncio.to_thread(terminate_listener, postgres_server, database) == 1
            await wait_until(
                lambda: daemon.events("listener_reconnected"), within=15, message="the listener to reconnect"
            )
            after = await listener_pids(postgres_server, database)
            assert len(after) == 1, after
            assert after != before
            logged = [line["event"] for line in daemon.log_lines()]
            assert logged.index("listener_disconnected") < logged.index("listener_reconnected")
            (disconnected,) = daemon.events("listener_disconnected")
            assert disconnected["level"] == "warning"

            third = await insert_and_see_it_claimed(engine, store, "third")
            await cancel_and_see_it_done(engine, store, third)

            # A request that arrives while the create is in flight is carried out as soon as the create returns.
            emulator.configure(latency=(1.0, 1.0))
            (fourth,) = await insert_jobs(engine, 1, name="fourth", training_data=TEN_EXAMPLES, epochs=5, batch=1)
            await wait_until(lambda: in_state(store, fourth, State.SUBMITTING), within=PROMPT, message="a create")
            await request_cancel(engine, fourth)
            done = await wait_until(lambda: in_state(store, fourth, State.CANCELLED), within=PROMPT, message="cancel")
            emulator.configure(latency=None)
            changes = {e.kind: e for e in await store.events(fourth) if e.to_state is not None}
            assert list(changes) == ["claimed", "accepted", "cancel_started", "cancelled"], list(changes)
            waited = (changes["cancel_started"].at - changes["accepted"].at).total_seconds()
            assert waited < 1.0, f"the cancel started {waited:.2f} s after the create returned"
            assert done.tuned_model_id is not None
            assert emulator.stats()["models"][done.tuned_model_id]["deleted_at"] is not None

            assert await daemon.stop() == 0
    assert daemon.starts == 1


async def insert_and_see_it_claimed(engine: AsyncEngine, store: JobStore, name: str) -> Job:
    (job_id,) = await insert_jobs(engine, 1, name=name, training_data=TEN_EXAMPLES, epochs=5, batch=1)
    inserted = time.monotonic()

    async def tuning() -> Job | None:
        job = await store.get_job(job_id)
        assert job is not None
        return job if job.state is State.TUNING else None

    job = await wait_until(tuning, within=PROMPT, message=f"job {job_id} ({name}) to be claimed and submitted")
    took = time.monotonic() - inserted
    assert took < PROMPT < IDLE_INTERVAL
    (claim,) = claims(await store.events(job_id))
    assert (claim.at - job.created_at).total_seconds() < PROMPT, (claim.at, job.created_at)
    return job


async def request_cancel(engine: AsyncEngine, job_id: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE tuning_jobs SET cancel_requested = TRUE WHERE id = :id"), {"id": job_id})


async def in_state(store: JobStore, job_id: int, state: State) -> Job | None:
    job = await store.get_job(job_id)
    assert job is not None
    return job if job.state is state else None


async def cancel_and_see_it_done(
    engine: AsyncEngine, store: JobStore, job: Job, *, requested_already: bool = False
) -> Job:
    if not requested_already:
        await request_cancel(engine, job.id)
    requested = datetime.now(UTC)
    done = await wait_until(
        lambda: in_state(store, job.id, State.CANCELLED), within=PROMPT, message=f"job {job.id} to be cancelled"
    )
    assert done.finished_at is not None
    assert (done.finished_at - requested).total_seconds() < PROMPT
    return done


@contextlib.asynccontextmanager
async def holding_row(engine: AsyncEngine, job_id: int, *, seconds: float) -> AsyncIterator[None]:
    """Another transaction holds the job's row (FOR KEY SHARE: an UPDATE of its columns still goes through, but
    a claim's FOR UPDATE SKIP LOCKED passes the row over) from the block's start until `seconds` after it."""
    locked = asyncio.Event()

    async def hold() -> None:
        async with engine.begin() as conn:
            await conn.execute(sa.text("SELECT id FROM tuning_jobs WHERE id = :id FOR KEY SHARE"), {"id": job_id})
            locked.set()
            await conn.execute(sa.text("SELECT pg_sleep(:seconds)"), {"seconds": seconds})

    holder = asyncio.create_task(hold())
    await wait_until(lambda: locked.is_set() or holder.done(), within=10, message="the row lock")
    try:
        yield
    finally:
        await holder


async def listener_pids(server: PostgresServer, database: str | None) -> list[int]:
    def query() -> list[int]:
        with server.admin() as admin:
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = %s",
                (APPLICATION_NAME, database),
            ).fetchall()
        return sorted(row[0] for row in rows)

    return await asyncio.to_thread(query)


def terminate_listener(server: PostgresServer, database: str | None) -> int:
    with server.admin() as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s AND datname = %s",
            (APPLICATION_NAME, database),
        ).fetchall()
    return sum(1 for (terminated,) in rows if terminated)
