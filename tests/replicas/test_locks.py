"""Locks held by others never stop a replica: a replica frozen inside the dispatch claim (holding its advisory
lock) does not stop the other replicas' dispatching, and a producer's open transaction on one job's row does not
stop the daemon's writes for the other jobs."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.harness import DaemonProcess, daemon_environment
from tests.replicas.support import TINY_DATASET, insert_jobs, replica_env, running_emulator
from tests.waiting import wait_until
from tunekeeper.db.engine import APPLICATION_NAME
from tunekeeper.db.store import JobStore
from tunekeeper.db.tables import job_events, tuning_jobs
from tunekeeper.emulator import Emulator, EmulatorConfig
from tunekeeper.states import State, Transition

DISPATCH_LOCK_KEY = 0x74756E65  # the store's dispatch claim lock


@contextlib.asynccontextmanager
async def producer_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """An open transaction of a producer's own (no idle timeout of ours: producers set their own)."""
    async with engine.connect() as conn:
        await conn.begin()
        await conn.execute(sa.text("SET LOCAL idle_in_transaction_session_timeout = 0"))
        yield conn


async def dispatch_lock_holder(engine: AsyncEngine) -> int | None:
    """The server process holding the dispatch claim's advisory lock, if any."""
    query = sa.text(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = :key "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    async with engine.connect() as conn:
        pid: int | None = await conn.scalar(query, {"key": DISPATCH_LOCK_KEY})
    return pid


async def claim_waiting_for_events(engine: AsyncEngine) -> int | None:
    """The server process of a daemon connection that holds the dispatch lock and waits to write job_events."""
    query = sa.text(
        "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
        "WHERE a.application_name = :name AND a.wait_event_type = 'Lock' AND a.query ILIKE 'INSERT INTO job_events%' "
        "AND l.locktype = 'advisory' AND l.granted AND l.objid = :key AND a.datname = current_database()"
    )
    async with engine.connect() as conn:
        pid: int | None = await conn.scalar(query, {"name": APPLICATION_NAME, "key": DISPATCH_LOCK_KEY})
    return pid


async def claimed_by(engine: AsyncEngine, job_id: int, owner: str) -> bool:
    query = sa.select(job_events.c.detail).where(job_events.c.job_id == job_id, job_events.c.kind == "claimed")
    async with engine.connect() as conn:
        details = (await conn.scalars(query)).all()
    return any(detail.get("owner") == owner for detail in details)


async def no_longer_holds(engine: AsyncEngine, pid: int) -> bool:
    return await dispatch_lock_holder(engine) != pid


# A process that takes the dispatch lock on a connection made as the daemon makes them, then freezes itself
# between two statements, its transaction open: a replica stopped in the middle of its claim.
FREEZE_HOLDING_THE_LOCK = f"""
import asyncio, os, signal, sys
import sqlalchemy as sa
from tunekeeper.db.engine import make_engine

async def main():
    engine = make_engine(sys.argv[1], idle_in_transaction_timeout=float(sys.argv[2]))
    async with engine.connect() as conn:
        await conn.begin()
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock({DISPATCH_LOCK_KEY})))
        print("locked", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)

asyncio.run(main())
"""


async def test_a_replica_frozen_holding_the_dispatch_lock_stops_no_other_replica(
    postgres_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    frozen = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FREEZE_HOLDING_THE_LOCK, postgres_url, "1", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert frozen.stdout is not None
        async with asyncio.timeout(30):
            assert await frozen.stdout.readline() == b"locked\n"
        holder = await wait_until(lambda: dispatch_lock_holder(engine), within=10, message="the lock to be held")
        async with running_emulator(EmulatorConfig(step_seconds=0.02, log_requests=False)) as emulator:
            env = daemon_environment(postgres_url, emulator.base_url)
            async with DaemonProcess(tmp_path, replica_env(env, "replica-live"), name="replica-live"):
                [job_id] = await insert_jobs(engine, 1, name="after a freeze")
                await wait_until(
                    lambda: claimed_by(engine, job_id, "replica-live"), within=30, message="the live replica's claim"
                )
        assert await no_longer_holds(engine, holder)
    finally:
        frozen.kill()
        await frozen.wait()


async def test_a_replica_frozen_while_its_claim_waits_for_a_lock_lets_the_dispatch_lock_go(
    postgres_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    async with running_emulator(EmulatorConfig(step_seconds=0.02, log_requests=False)) as emulator:
        env = daemon_environment(postgres_url, emulator.base_url)
        frozen = DaemonProcess(tmp_path, replica_env(env, "replica-frozen"), name="replica-frozen")
        other = DaemonProcess(tmp_path, replica_env(env, "replica-other"), name="replica-other")
        await frozen.start(within=40)
        try:
            # The frozen replica's claim takes the dispatch lock, then waits to append the claim's events (a
            # table lock of ours holds it up); frozen there, it can neither finish nor give up by itself.
            async with producer_transaction(engine) as blocker:
                await blocker.execute(sa.text("LOCK TABLE job_events IN EXCLUSIVE MODE"))
                [job_id] = await insert_jobs(engine, 1, name="frozen claim")
                pid = await wait_until(
                    lambda: claim_waiting_for_events(engine), within=20, message="the claim to hold the dispatch lock"
                )
                frozen.signal(signal.SIGSTOP)
                await wait_until(
                    lambda: no_longer_holds(engine, pid), within=20, message="the frozen claim to let the lock go"
                )
                await blocker.commit()

            await other.start(within=40)
            await wait_until(
                lambda: claimed_by(engine, job_id, "replica-other"),
                within=30,
                message="the other replica to claim the job",
            )
        finally:
            if frozen.running:
                frozen.signal(signal.SIGCONT)
            for daemon in (frozen, other):
                if daemon.running:
                    await daemon.kill()


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


LOCKED_MODEL_ID = "held-by-a-producer"


class HeldCreate:
    """Holds the create of one model at the emulator until released: its job is `submitting` meanwhile."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST" and request.query.get("tunedModelId") == self.model_id:
            self.arrived.set()
            await self.release.wait()
        response: web.StreamResponse = await handler(request)
        return response


async def test_a_producer_holding_one_job_row_does_not_stop_the_other_jobs(
    postgres_url: str, engine: AsyncEngine, store: JobStore, tmp_path: Path
) -> None:
    held = HeldCreate(LOCKED_MODEL_ID)
    config = EmulatorConfig(step_seconds=0.02, log_requests=False)
    emulator = Emulator(config)
    emulator.app.middlewares.append(held.middleware)  # before start: the app freezes then
    async with emulator:
        env = daemon_environment(postgres_url, emulator.base_url, {"TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS": "10"})
        async with DaemonProcess(tmp_path, env) as daemon:
            async with engine.begin() as conn:
                locked_id = (
                    await conn.execute(
                        tuning_jobs.insert()
                        .values(display_name="locked", training_data=TINY_DATASET, tuned_model_id=LOCKED_MODEL_ID)
                        .returning(tuning_jobs.c.id)
                    )
                ).scalar_one()
            await wait_until(held.arrived.is_set, within=20, message="the locked job's create")

            async with producer_transaction(engine) as producer:
                await producer.execute(
                    sa.text("SELECT id FROM tuning_jobs WHERE id = :id FOR UPDATE"), {"id": locked_id}
                )
                held.release.set()  # the create is answered: the daemon now writes `accepted` to the locked row
                await daemon.wait_for_events("job_row_locked", lambda line: line.get("job_id") == locked_id, within=20)

                others = await insert_jobs(engine, 5, name="free")

                async def others_succeeded() -> bool:
                    found = [await store.get_job(job_id) for job_id in others]
                    return all(job is not None and job.state is State.SUCCEEDED for job in found)

                await wait_until(others_succeeded, within=30, message="the other jobs to succeed")
                locked = await store.get_job(locked_id)
                assert locked is not None and locked.state is State.SUBMITTING

            # released: the held job's write goes through, and it runs to the end
            await wait_until(
                lambda: _equals(_state(store, locked_id), State.SUCCEEDED),
                within=30,
                message="the released job to succeed",
            )
            events = await store.events(locked_id)
            assert [event.kind for event in events if event.to_state is not None] == [
                Transition.CLAIMED,
                Transition.ACCEPTED,
                Transition.SUCCEEDED,
            ]


async def _state(store: JobStore, job_id: int) -> State | None:
    job = await store.get_job(job_id)
    return job.state if job else None
