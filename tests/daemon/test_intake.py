"""Jobs inserted by plain SQL, with no Python on the producer's side, reach the right end state.

The producer is the backend's own command-line tool: sqlite3 on SQLite, psql on PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.harness import DaemonProcess, daemon_environment
from tests.waiting import wait_until
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


def insert_statements(rows: dict[str, tuple[str, str]]) -> str:
    """The producer's script: one plain INSERT per row, the JSON as literal text."""
    assert not any("'" in name + data for name, data in rows.values())
    return "".join(
        f"INSERT INTO tuning_jobs (display_name, training_data) VALUES ('{name}', '{data}');\n"
        for name, data in rows.values()
    )


def command_line_client(database_url: str) -> list[str]:
    """The backend's own command-line tool, connected to the database as an operator would connect it."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return ["sqlite3", "-bail", str(url.database)]
    libpq_url = url.set(drivername="postgresql").render_as_string(hide_password=False)  # without +asyncpg
    return ["psql", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-q", libpq_url]


def insert_with_command_line_client(database_url: str, rows: dict[str, tuple[str, str]]) -> None:
    command = command_line_client(database_url)
    if shutil.which(command[0]) is None:
        pytest.skip(f"the {command[0]} command-line tool is not installed")
    done = subprocess.run(command, input=insert_statements(rows), capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr


async def test_plain_sql_jobs_end_valid_or_invalid_with_a_message(
    database_url: str, store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    """The rows are written by sqlite3 on SQLite and by psql on PostgreSQL, each a real process of its own."""
    insert_with_command_line_client(database_url, ROWS)
    async with DaemonProcess(tmp_path, daemon_environment(database_url, emulator.base_url)):

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
