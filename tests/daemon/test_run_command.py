"""`tunekeeper run` as an operator sees it: JSON log lines on stdout, and refusals to start that say why.

A bad setting or a database at the wrong schema revision stops start-up with exit status 78 (EX_CONFIG) and
one message naming the problem and what to do, before any job is touched.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.harness import TEST_API_KEY, DaemonProcess, daemon_environment
from tests.pg import PostgresServer
from tests.waiting import wait_until
from tunekeeper.config import EX_CONFIG
from tunekeeper.db.engine import make_engine
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator, EmulatorConfig
from tunekeeper.states import TERMINAL, State

EXAMPLES = [{"text_input": str(n), "output": str(n + 1)} for n in range(10)]
LEVELS = {"debug", "info", "warning", "error", "critical"}


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[JobStore]:
    engine = make_engine(sqlite_url)
    yield JobStore(engine)
    await engine.dispose()


async def run_once(env: Mapping[str, str], *, within: float = 30.0) -> tuple[int, str, str]:
    """`tunekeeper run` that is expected to exit by itself: (status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tunekeeper",
        "run",
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(within):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture
async def faulty_emulator() -> AsyncIterator[Emulator]:
    """Faults, so that warnings (api_retry) are among the log lines: the k-th request gets the k-th seeded draw,
    and with seed 9 the very first request meets a 429."""
    config = EmulatorConfig(step_seconds=0.01, faults={"429": 0.10, "503": 0.05}, seed=9, log_requests=False)
    async with Emulator(config) as emu:
        yield emu


async def test_every_line_of_a_full_run_is_a_json_event_and_state_changes_match_the_audit_trail(
    database_url: str, store: JobStore, faulty_emulator: Emulator, tmp_path: Path
) -> None:
    """On PostgreSQL the notification listener logs lines of its own: JSON events like the rest."""
    emulator = faulty_emulator
    requests = [
        NewJob(display_name="fine 1", training_data=EXAMPLES),
        NewJob(display_name="fine 2", training_data=EXAMPLES),
        NewJob(display_name="no data", training_data=[]),
        NewJob(display_name="unknown base", training_data=EXAMPLES, base_model="models/no-such-model"),
    ]
    ids = [await store.add_job(request) for request in requests]
    async with DaemonProcess(tmp_path, daemon_environment(database_url, emulator.base_url)) as daemon:

        async def finished() -> bool:
            jobs = await store.list_jobs()
            return len(jobs) == len(ids) and all(job.state in TERMINAL for job in jobs)

        await wait_until(finished, within=30, message="every job to finish")
        assert await daemon.stop() == 0

    states = {job.id: job.state for job in await store.list_jobs()}
    assert [states[job_id] for job_id in ids] == [State.SUCCEEDED, State.SUCCEEDED, State.INVALID, State.FAILED]

    raw = daemon.stdout_text().splitlines()
    assert raw, "the daemon wrote nothing on stdout"
    lines = []
    for number, text in enumerate(raw, 1):
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            raise AssertionError(f"stdout line {number} is not JSON: {text!r}") from None
        assert isinstance(line, dict), text
        assert {"timestamp", "level", "event"} <= line.keys(), text
        assert line["level"] in LEVELS, text
        assert isinstance(line["event"], str), text
        assert line["event"], text
        assert line["timestamp"].endswith("Z"), text
        datetime.fromisoformat(line["timestamp"])
        lines.append(line)
    assert daemon.stderr_text() == ""
    assert TEST_API_KEY not in daemon.stdout_text()

    events = [line["event"] for line in lines]
    for name in ("daemon_started", "daemon_stopping", "daemon_stopped"):
        assert events.count(name) == 1, name
    assert events.index("daemon_started") < events.index("daemon_stopping") < events.index("daemon_stopped")
    assert any(line["event"] == "api_retry" and line["level"] == "warning" for line in lines)

    # Every state change is a log line carrying the job and both states, in the order job_events has them.
    changes = [line for line in lines if line["event"] == "job_state_changed"]
    for line in changes:
        assert isinstance(line["job_id"], int), line
        assert State(line["from_state"]) is not None
        assert State(line["to_state"]) is not None
        assert isinstance(line["transition"], str), line
    for job_id in ids:
        logged = [(c["transition"], c["from_state"], c["to_state"]) for c in changes if c["job_id"] == job_id]
        history = await store.events(job_id)
        recorded = [(e.kind, e.from_state, e.to_state) for e in history if e.to_state is not None]
        assert logged == recorded, job_id
        assert logged[-1][2] == states[job_id]


async def test_a_bad_setting_stops_start_up_with_one_line_naming_the_key(
    sqlite_url: str, emulator: Emulator, sqlite_store: JobStore
) -> None:
    job_id = await sqlite_store.add_job(NewJob(display_name="untouched", training_data=EXAMPLES))
    env = daemon_environment(sqlite_url, emulator.base_url, {"TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS": "0"})
    status, stdout, stderr = await run_once(env)

    assert status == EX_CONFIG == 78
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "gemini.max_active_jobs" in lines[0]
    assert "TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS" in lines[0]
    assert "Traceback" not in stderr
    assert stdout == ""
    job = await sqlite_store.get_job(job_id)
    assert job is not None
    assert job.state is State.QUEUED
    assert emulator.stats()["requests"]["total"] == 0


async def test_no_api_key_stops_start_up_with_one_line_naming_where_it_comes_from(
    sqlite_url: str, emulator: Emulator, sqlite_store: JobStore
) -> None:
    job_id = await sqlite_store.add_job(NewJob(display_name="untouched", training_data=EXAMPLES))
    env = daemon_environment(sqlite_url, emulator.base_url, {"TUNEKEEPER_GEMINI__API_KEY": ""})
    status, stdout, stderr = await run_once(env)

    assert status == EX_CONFIG
    [line] = stderr.splitlines()
    assert "gemini.api_key" in line and "TUNEKEEPER_GEMINI__API_KEY" in line and "gemini-api-key" in line
    assert stdout == ""
    job = await sqlite_store.get_job(job_id)
    assert job is not None and job.state is State.QUEUED
    assert emulator.stats()["requests"]["total"] == 0


def schema_refusal(status: int, stdout: str, stderr: str) -> str:
    """The error of the one `schema_mismatch` line of a daemon that refused to start."""
    assert status == EX_CONFIG, stdout + stderr
    refusals = [json.loads(line) for line in stdout.splitlines() if '"schema_mismatch"' in line]
    assert len(refusals) == 1, stdout + stderr
    assert refusals[0]["level"] == "error"
    assert '"daemon_started"' not in stdout
    assert "Traceback" not in stdout + stderr
    error: str = refusals[0]["error"]
    return error


@pytest.fixture
def never_migrated_url(database_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database on the same backend as `database_url` that has never been migrated: no file, or an empty one."""
    if make_url(database_url).get_backend_name() == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'never-migrated.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database(migrated=False)
    yield server.url(name)
    server.drop_database(name)


async def schema_objects(url: str) -> list[str]:
    """Every object in the database's own schemas: tables, indexes, sequences, views, triggers."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                query = "SELECT type || ' ' || name FROM sqlite_master"
            else:
                query = (
                    "SELECT c.relkind::text || ' ' || n.nspname || '.' || c.relname FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
                    " UNION ALL SELECT 'function ' || p.proname FROM pg_proc p"
                    " JOIN pg_namespace n ON n.oid = p.pronamespace"
                    " WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
                )
            return list((await conn.execute(sa.text(query))).scalars())
    finally:
        await engine.dispose()


async def test_a_database_at_another_schema_revision_is_refused_with_what_to_run(
    database_url: str, never_migrated_url: str, store: JobStore, emulator: Emulator
) -> None:
    job_id = await store.add_job(NewJob(display_name="untouched", training_data=EXAMPLES))
    async with store.engine.begin() as conn:  # as if written by a newer tunekeeper
        stamped = await conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        assert stamped.rowcount == 1
    behind, ahead = await asyncio.gather(
        run_once(daemon_environment(never_migrated_url, emulator.base_url)),
        run_once(daemon_environment(database_url, emulator.base_url)),
    )

    assert "run `tunekeeper db upgrade`" in schema_refusal(*behind)
    assert await schema_objects(never_migrated_url) == []  # the daemon created nothing in it

    error = schema_refusal(*ahead)
    assert "newer than this tunekeeper" in error
    assert "upgrade tunekeeper" in error
    job = await store.get_job(job_id)
    assert job is not None
    assert job.state is State.QUEUED
    assert emulator.stats()["requests"]["total"] == 0
