"""PostgreSQL specifics: psql as a producer, concurrent upgrades, the NOTIFY trigger and the listener."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator

import psycopg
import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import DESIGN_INSERT
from tests.pg import PostgresServer
from tests.waiting import wait_until
from tunekeeper.db import tables
from tunekeeper.db.engine import make_engine
from tunekeeper.db.listener import APPLICATION_NAME, JobNotifications, Notification
from tunekeeper.db.migrate import HEAD_REVISION, check_schema, current_revision, upgrade

pytestmark = pytest.mark.postgres


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(postgres_url)
    yield engine
    await engine.dispose()


async def _insert_job(engine: AsyncEngine, name: str = "job") -> int:
    async with engine.begin() as connection:
        job_id: int = await connection.scalar(
            sa.insert(tables.tuning_jobs).values(display_name=name).returning(tables.tuning_jobs.c.id)
        )
    return job_id


async def _request_cancel(engine: AsyncEngine, job_id: int) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            sa.text("UPDATE tuning_jobs SET cancel_requested = TRUE WHERE id = :id"), {"id": job_id}
        )


def test_the_contracts_insert_works_from_psql(postgres_server: PostgresServer, postgres_url: str) -> None:
    if shutil.which("psql") is None:
        pytest.skip("no psql")
    dsn = postgres_server.dsn(make_url(postgres_url).database or "")
    script = f"{DESIGN_INSERT}\nUPDATE tuning_jobs SET cancel_requested = TRUE WHERE id = 1;\n"
    script += "SELECT id, state, cancel_requested, jsonb_array_length(training_data) FROM tuning_jobs;\n"
    done = subprocess.run(
        ["psql", "--no-psqlrc", "-X", "-v", "ON_ERROR_STOP=1", "-qAt", dsn],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.strip() == "1|queued|t|2"


async def test_concurrent_upgrades_both_succeed(postgres_server: PostgresServer) -> None:
    name = await asyncio.to_thread(postgres_server.create_database, migrated=False)
    url = postgres_server.url(name)
    try:
        await asyncio.gather(upgrade(url), upgrade(url), upgrade(url))
        engine = make_engine(url)
        try:
            assert await current_revision(engine) == HEAD_REVISION
            await check_schema(engine)
        finally:
            await engine.dispose()
    finally:
        await asyncio.to_thread(postgres_server.drop_database, name)


async def test_the_trigger_notifies_inserts_and_cancel_requests(postgres_url: str, engine: AsyncEngine) -> None:
    async with JobNotifications(postgres_url) as notes:
        everything = notes.subscribe()
        cancels = notes.subscribe({"cancel"})

        first = await _insert_job(engine)
        assert await everything.wait(10.0)
        assert everything.take() == [Notification(first, "insert")]

        await _request_cancel(engine, first)
        assert await everything.wait(10.0)
        assert everything.take() == [Notification(first, "cancel")]

        await _request_cancel(engine, first)  # already requested: no second notification
        second = await _insert_job(engine)
        assert await everything.wait(10.0)
        assert everything.take() == [Notification(second, "insert")]
        assert cancels.take() == [Notification(first, "cancel")]


async def test_a_notification_wakes_every_waiter(postgres_url: str, engine: AsyncEngine) -> None:
    async with JobNotifications(postgres_url) as notes:
        dispatcher, canceller = notes.subscribe({"insert"}), notes.subscribe()
        waits = asyncio.gather(dispatcher.wait(10.0), canceller.wait(10.0), notes.wait(10.0))
        await _insert_job(engine)
        assert list(await waits) == [True, True, True]


async def test_a_notification_waits_for_a_busy_consumer(postgres_url: str, engine: AsyncEngine) -> None:
    async with JobNotifications(postgres_url) as notes:
        subscription, probe = notes.subscribe(), notes.subscribe()
        job_id = await _insert_job(engine)
        assert await probe.wait(10.0)  # every subscription has it now
        assert await subscription.wait(0)  # it arrived while nobody waited, and is not lost
        assert subscription.take() == [Notification(job_id, "insert")]
        assert not await subscription.wait(0)


async def test_the_listener_reconnects_after_its_connection_is_killed(
    postgres_server: PostgresServer, postgres_url: str, engine: AsyncEngine
) -> None:
    database = make_url(postgres_url).database
    with structlog.testing.capture_logs() as logs:
        async with JobNotifications(postgres_url, min_backoff=0.05) as notes:
            subscription = notes.subscribe()
            killed = notes.backend_pid
            assert killed is not None

            def kill() -> int:
                with postgres_server.admin() as admin:
                    rows = admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name = %s AND datname = %s",
                        (APPLICATION_NAME, database),
                    ).fetchall()
                return len(rows)

            assert await asyncio.to_thread(kill) == 1
            await wait_until(lambda: notes.backend_pid not in (None, killed), message="a new listening connection")
            # anything may have happened while it was away: consumers are told to look
            assert await subscription.wait(10.0)
            assert subscription.take() == [Notification(None, "reconnected")]

            job_id = await _insert_job(engine)
            assert await subscription.wait(10.0)
            assert subscription.take() == [Notification(job_id, "insert")]
    events = [entry["event"] for entry in logs]
    assert events.index("listener_disconnected") < events.index("listener_reconnected")


@pytest.mark.slow
async def test_the_listener_survives_a_server_restart(own_postgres: PostgresServer) -> None:
    name = await asyncio.to_thread(own_postgres.create_database)
    url = own_postgres.url(name)
    engine = make_engine(url)
    try:
        async with JobNotifications(url, min_backoff=0.05, max_backoff=0.5) as notes:
            subscription = notes.subscribe()
            assert notes.connected

            await asyncio.to_thread(own_postgres.stop)
            await wait_until(lambda: not notes.connected, message="the listener to notice the server is gone")
            assert not await notes.wait(0.05)  # while the server is down, waits time out instead of hanging
            await asyncio.to_thread(own_postgres.start)

            await wait_until(lambda: notes.connected, within=30.0, message="the listener to reconnect")
            assert await subscription.wait(10.0)
            assert subscription.take() == [Notification(None, "reconnected")]
            job_id = await _insert_job(engine)
            assert await subscription.wait(10.0)
            assert subscription.take() == [Notification(job_id, "insert")]
    finally:
        await engine.dispose()


def test_restarting_our_own_server_cuts_connections(own_postgres: PostgresServer) -> None:
    assert own_postgres.restartable
    name = own_postgres.create_database()
    with psycopg.connect(own_postgres.dsn(name), autocommit=True) as before:
        own_postgres.restart()
        with pytest.raises(psycopg.OperationalError):
            before.execute("SELECT 1")
    with psycopg.connect(own_postgres.dsn(name), autocommit=True) as after:
        assert after.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD_REVISION,)


@pytest.mark.parametrize("column", ["training_data", "labels", "eval_data", "snapshots", "eval_results"])
async def test_json_nested_too_deep_is_refused_naming_the_column(postgres_url: str, column: str) -> None:
    engine = make_engine(postgres_url)
    update = f"UPDATE tuning_jobs SET {column} = CAST(:value AS jsonb)"
    statements = [update]
    if column in ("training_data", "labels", "eval_data"):  # the request's: a producer's INSERT sets them
        statements.append(f"INSERT INTO tuning_jobs (display_name, {column}) VALUES ('x', CAST(:value AS jsonb))")
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(DESIGN_INSERT))
            for depth in (64, 1):  # at the limit, and shallow
                await conn.execute(sa.text(update), {"value": "[" * depth + "]" * depth})
        for statement in statements:
            with pytest.raises(sa.exc.IntegrityError, match=f"tuning_jobs.{column} is nested more than 64 levels"):
                async with engine.begin() as conn:
                    await conn.execute(sa.text(statement), {"value": "[" * 5_000 + "]" * 5_000})
    finally:
        await engine.dispose()
