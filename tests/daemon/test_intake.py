"""Jobs inserted by plain SQL, with no Python on the producer's side, reach the right end state."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.harness import DaemonProcess, daemon_environment
from tests.waiting import wait_until
from tunekeeper.db.engine import make_engine
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import TERMINAL, State

GOOD = json.dumps([{"text_input": str(n), "output": str(n + 1)} for n in range(10)])
ROWS = {
    "good": ("number generator", GOOD),
    "camel": ("camel keys", json.dumps([{"textInput": "a", "output": "b"}])),
    "unknown key": ("chatty", json.dumps([{"text_input": "a", "output": "b"}, {"role": "user", "output": "b"}])),
    "too long": ("long input", json.dumps([{"text_input": "x" * 40_001, "output": "y"}])),
    "empty": ("nothing", "[]"),
}
EXPECTED = {
    "good": (State.SUCCEEDED, None),
    "camel": (State.SUCCEEDED, None),
    "unknown key": (State.INVALID, "example 1: unknown key 'role'"),
    "too long": (State.INVALID, "example 0: text_input is 40,001 characters; the limit is 40,000"),
    "empty": (State.INVALID, "training_data"),
}


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite+aiosqlite:///"))


def insert_with_sqlite3(database: Path, rows: dict[str, tuple[str, str]]) -> None:
    statements = "".join(
        f"INSERT INTO tuning_jobs (display_name, training_data) VALUES ('{name}', '{data}');\n"
        for name, data in rows.values()
    )
    subprocess.run(["sqlite3", str(database)], input=statements, text=True, check=True)


@pytest.mark.skipif(not Path("/usr/bin/sqlite3").exists(), reason="the sqlite3 command-line tool is not installed")
async def test_plain_sql_jobs_end_valid_or_invalid_with_a_message(
    sqlite_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    insert_with_sqlite3(sqlite_path(sqlite_url), ROWS)
    engine = make_engine(sqlite_url)
    store = JobStore(engine)
    async with DaemonProcess(tmp_path, daemon_environment(sqlite_url, emulator.base_url)):

        async def all_finished() -> bool:
            jobs = await store.list_jobs()
            return len(jobs) == len(ROWS) and all(job.state in TERMINAL for job in jobs)

        await wait_until(all_finished, within=30, message="every job to finish")
    jobs = {job.display_name: job for job in await store.list_jobs()}
    for key, (name, _) in ROWS.items():
        state, message = EXPECTED[key]
        assert jobs[name].state is state, (key, jobs[name].last_error)
        if message is not None:
            assert jobs[name].last_error is not None and message in jobs[name].last_error
    await engine.dispose()
