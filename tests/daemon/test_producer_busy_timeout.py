"""On SQLite a producer with the busy timeout the README's database contract gives (the sqlite3 shell's
`.timeout`, Python's `sqlite3.connect(path, timeout=...)`) never fails with `database is locked` while the
daemon works: the daemon's write transactions are short, and the producer waits for them."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.harness import DaemonProcess, daemon_environment
from tests.waiting import wait_until
from tunekeeper.db.engine import make_engine
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator
from tunekeeper.states import State

README = Path(__file__).resolve().parents[2] / "README.md"
ROWS = 40
# Jobs with some weight: a few thousand examples each, so that the daemon's claims and polls handle large rows.
LOAD_JOBS = 40
LOAD_DATA = json.dumps([{"text_input": f"input {i:06d} " * 4, "output": f"output {i:06d}"} for i in range(3000)])
INSERT = "INSERT INTO tuning_jobs (display_name, training_data) VALUES (?, ?)"
SMALL_DATA = json.dumps([{"text_input": "1", "output": "2"}])


def contract() -> str:
    text = README.read_text()
    start = text.index("### The database contract")
    return text[start : text.index("\n### ", start + 1)]


def documented_busy_timeouts() -> tuple[int, float]:
    """The sqlite3 shell's `.timeout` (milliseconds) and Python's `timeout=` (seconds) the contract documents."""
    section = contract()
    shell = re.search(r"\.timeout (\d+)", section)
    python = re.search(r"sqlite3\.connect\(path, timeout=(\d+(?:\.\d+)?)\)", section)
    assert shell and python, "the database contract documents a producer's busy timeout for sqlite3 and Python"
    return int(shell.group(1)), float(python.group(1))


def insert_load(path: Path) -> None:
    with sqlite3.connect(path, timeout=30) as conn:
        conn.executemany(INSERT, [(f"load {n}", LOAD_DATA) for n in range(LOAD_JOBS)])
    conn.close()


def insert_with_python(path: Path, timeout: float) -> list[str]:
    """ROWS INSERTs back to back, each its own transaction; the errors met."""
    errors = []
    conn = sqlite3.connect(path, timeout=timeout)
    try:
        for n in range(ROWS):
            try:
                with conn:
                    conn.execute(INSERT, (f"python {n}", SMALL_DATA))
            except sqlite3.OperationalError as exc:
                errors.append(str(exc))
    finally:
        conn.close()
    return errors


def insert_with_shell(path: Path, timeout_ms: int) -> list[str]:
    """ROWS sqlite3 shell processes back to back, one INSERT each, as the README shows; the errors met."""
    errors = []
    for n in range(ROWS):
        done = subprocess.run(
            [
                "sqlite3",
                "-bail",
                "-cmd",
                f".timeout {timeout_ms}",
                str(path),
                f"INSERT INTO tuning_jobs (display_name, training_data) VALUES ('shell {n}', '{SMALL_DATA}');",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            errors.append(done.stderr.strip())
    return errors


async def test_a_producer_with_the_documented_busy_timeout_never_meets_a_locked_database(
    sqlite_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    shell_ms, python_s = documented_busy_timeouts()
    engine = make_engine(sqlite_url)
    try:
        await produce_while_the_daemon_works(JobStore(engine), sqlite_url, emulator, tmp_path, shell_ms, python_s)
    finally:
        await engine.dispose()


async def produce_while_the_daemon_works(
    store: JobStore, sqlite_url: str, emulator: Emulator, tmp_path: Path, shell_ms: int, python_s: float
) -> None:
    path = Path(str(make_url(sqlite_url).database))
    env = daemon_environment(sqlite_url, emulator.base_url, {"TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS": "100"})
    async with DaemonProcess(tmp_path, env):
        await asyncio.to_thread(insert_load, path)

        async def load_claimed() -> bool:
            counts = await store.count_by_state()
            return counts.get(State.QUEUED, 0) < LOAD_JOBS

        await wait_until(load_claimed, within=30, message="the daemon to take on the load")
        python_errors = await asyncio.to_thread(insert_with_python, path, python_s)
        shell_errors = await asyncio.to_thread(insert_with_shell, path, shell_ms) if shutil.which("sqlite3") else []
        assert python_errors == []
        assert shell_errors == []

        async def all_done() -> bool:
            jobs = await store.list_jobs(limit=1000)
            return all(job.state is State.SUCCEEDED for job in jobs)

        await wait_until(all_done, within=60, message="every job to succeed")
    jobs = await store.list_jobs(limit=1000)
    names = {str(job.display_name) for job in jobs}
    assert {f"python {n}" for n in range(ROWS)} <= names
    if shutil.which("sqlite3"):
        assert {f"shell {n}" for n in range(ROWS)} <= names
