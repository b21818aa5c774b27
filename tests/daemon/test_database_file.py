"""The SQLite file under a running daemon (real daemon subprocesses, real files).

- One daemon per file: a second `tunekeeper run` on the same file is refused in one line naming the first,
  while read-only commands keep working; the lock ends with its process.
- A file deleted, or moved aside and replaced, under the running daemon: an error line, readiness fails, nothing
  more is written into the old file, and the daemon exits 75 so that systemd starts it again on the new one.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import sqlite_url_of
from tests.daemon.test_run_command import run_once
from tests.harness import DaemonProcess, daemon_environment
from tests.waiting import wait_until
from tunekeeper.db.engine import make_engine
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator, EmulatorConfig
from tunekeeper.exits import EX_TEMPFAIL, EX_UNAVAILABLE
from tunekeeper.states import State

EXAMPLES = [{"text_input": str(n), "output": str(n + 1)} for n in range(10)]
CREATE_LATENCY = 6.0  # every call to the service takes this long: a create is in flight when the file goes


def path_of(url: str) -> Path:
    return Path(make_url(url).database or "")


async def add_job(url: str, name: str) -> int:
    engine = make_engine(url)
    try:
        return await JobStore(engine).add_job(NewJob(display_name=name, training_data=EXAMPLES))
    finally:
        await engine.dispose()


async def job_state(url: str, job_id: int) -> tuple[State, list[str]]:
    engine = make_engine(url)
    try:
        store = JobStore(engine)
        job = await store.get_job(job_id)
        assert job is not None
        return job.state, [event.kind for event in await store.events(job_id)]
    finally:
        await engine.dispose()


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = daemon_environment(url, "http://127.0.0.1:9")
    return subprocess.run(
        [sys.executable, "-m", "tunekeeper", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_a_second_daemon_on_the_file_is_refused_naming_the_first(
    sqlite_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    job_id = await add_job(sqlite_url, "listed while the daemon runs")
    env = daemon_environment(sqlite_url, emulator.base_url)
    async with DaemonProcess(tmp_path, env) as first:
        assert first.process is not None
        status, stdout, stderr = await run_once(env)
        assert status == EX_UNAVAILABLE
        [line] = stderr.splitlines()
        assert line.startswith(
            f"database: {path_of(sqlite_url)} is in use by another tunekeeper daemon (pid {first.process.pid} on "
        )
        assert "one daemon per database file" in line
        [event] = [json.loads(text) for text in stdout.splitlines() if '"startup_failed"' in text]
        assert event["problem"] == "database_in_use"
        assert "Traceback" not in stdout + stderr
        assert first.running

        # read-only commands take no lock
        listed = cli(sqlite_url, "jobs", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [job["id"] for job in json.loads(listed.stdout)] == [job_id]
        shown = cli(sqlite_url, "show", str(job_id))
        assert shown.returncode == 0, shown.stderr

        await first.kill()  # SIGKILL: the lock goes with the process
    async with DaemonProcess(tmp_path, env, name="second") as second:
        assert await second.stop() == 0


@pytest.fixture
async def slow_emulator() -> AsyncIterator[Emulator]:
    config = EmulatorConfig(step_seconds=0.01, latency=(CREATE_LATENCY, CREATE_LATENCY), log_requests=False)
    async with Emulator(config) as emu:
        yield emu


async def readiness_seen(url: str) -> int | None:
    """/readyz's status, or None once nothing listens."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(url) as response,
        ):
            return response.status
    except aiohttp.ClientConnectionError:
        return None


@pytest.mark.parametrize("how", ["moved aside and replaced", "deleted"])
async def test_a_database_file_replaced_under_the_daemon_stops_it_and_gets_nothing_more(
    sqlite_url: str, slow_emulator: Emulator, tmp_path: Path, how: str
) -> None:
    path = path_of(sqlite_url)
    fresh = tmp_path / "fresh.db"  # migrated, no jobs: what replaces the file
    shutil.copyfile(path, fresh)
    in_flight = await add_job(sqlite_url, "in flight")
    env = daemon_environment(sqlite_url, slow_emulator.base_url, {"TUNEKEEPER_DAEMON__SHUTDOWN_GRACE": "15"})
    async with DaemonProcess(tmp_path, env) as daemon:
        [listening] = daemon.events("http_listening")
        readyz = f"http://127.0.0.1:{listening['port']}/readyz"
        assert await readiness_seen(readyz) == 200

        async def submitting() -> bool:
            return (await job_state(sqlite_url, in_flight))[0] is State.SUBMITTING

        await wait_until(submitting, within=20, message="the job to be claimed (its create then waits)")
        moved = tmp_path / "moved-aside.db"
        for suffix in ("", "-wal", "-shm"):  # with its log and index, so that the old file reads whole
            source = path.with_name(path.name + suffix)
            if how == "deleted":
                source.unlink(missing_ok=True)
            elif source.exists():
                os.rename(source, moved.with_name(moved.name + suffix))
        if how != "deleted":
            shutil.copyfile(fresh, path)
            waiting = await add_job(sqlite_url, "in the new file")

        [error] = await daemon.wait_for_events("database_file_replaced", within=10)
        assert error["level"] == "error"
        assert str(path) in error["error"]
        assert ("deleted" if how == "deleted" else "replaced") in error["error"]
        assert await readiness_seen(readyz) == 503  # while the create in flight drains
        assert daemon.process is not None
        async with asyncio.timeout(60):
            status = await daemon.process.wait()
        assert status == EX_TEMPFAIL == 75

    if how != "deleted":
        # the create's answer came after the file was moved: it was not written there ...
        state, kinds = await job_state(sqlite_url_of(moved), in_flight)
        assert state is State.SUBMITTING
        assert "accepted" not in kinds
        # ... and the new file's job waits for the daemon systemd starts next, untouched
        assert await job_state(sqlite_url, waiting) == (State.QUEUED, [])
    assert daemon.stderr_text() == ""
