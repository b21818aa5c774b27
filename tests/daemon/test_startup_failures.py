"""`tunekeeper run` that cannot start: one line on stderr naming the problem (and the path or host, never a
password), one `startup_failed` event in the log, the exit status README documents, and no traceback.

Every case runs the real command in a subprocess, against real things: a closed port on 127.0.0.1, a database
name the real PostgreSQL server does not have, a SQLite path in a missing directory, a file that is not SQLite,
a taken HTTP port.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

from tests.conftest import sqlite_url_of
from tests.daemon.test_run_command import run_once
from tests.harness import daemon_environment
from tests.pg import PostgresServer
from tunekeeper.emulator import Emulator
from tunekeeper.exits import EX_CONFIG, EX_UNAVAILABLE, EX_USAGE_ARGUMENT

PASSWORD = "s3cret-pw-4f1e"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound for a moment, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def refusal(url: str, emulator: Emulator, extra: dict[str, str] | None = None) -> tuple[int, str, dict]:
    """Run the daemon expecting it not to start: (status, the stderr line, the startup_failed event)."""
    status, stdout, stderr = await run_once(daemon_environment(url, emulator.base_url, extra))
    assert "Traceback" not in stdout + stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    failed = [event for event in events if event["event"] == "startup_failed"]
    assert len(failed) == 1, stdout
    assert failed[0]["level"] == "error"
    assert failed[0]["error"] == lines[0]
    assert failed[0]["exit_status"] == status
    assert not [event for event in events if event["event"] == "daemon_started"]
    assert PASSWORD not in stdout + stderr
    assert emulator.stats()["requests"]["total"] == 0
    return status, lines[0], failed[0]


async def test_a_postgresql_server_that_does_not_answer(emulator: Emulator) -> None:
    port = closed_port()
    url = URL.create("postgresql+asyncpg", "tunekeeper", PASSWORD, "127.0.0.1", port, "jobs")
    status, line, _ = await refusal(url.render_as_string(hide_password=False), emulator)
    assert status == EX_UNAVAILABLE == 69  # the server may come up: systemd tries again
    assert line == f"database: cannot reach PostgreSQL at 127.0.0.1:{port}: connection refused"


async def test_a_database_the_postgresql_server_does_not_have(
    postgres_server: PostgresServer, emulator: Emulator
) -> None:
    url = make_url(postgres_server.url("test")).set(database="no_such_tunekeeper_db", password=PASSWORD)
    status, line, _ = await refusal(url.render_as_string(hide_password=False), emulator)
    assert status == EX_CONFIG == 78  # a restart will not create it
    assert line == f"database: PostgreSQL at {url.host}:{url.port or 5432} has no database 'no_such_tunekeeper_db'"


async def test_a_role_the_postgresql_server_does_not_have(postgres_server: PostgresServer, emulator: Emulator) -> None:
    url = make_url(postgres_server.url("test")).set(username="no_such_tunekeeper_role", password=PASSWORD)
    status, line, _ = await refusal(url.render_as_string(hide_password=False), emulator)
    assert status == EX_CONFIG
    assert line.startswith(
        f"database: PostgreSQL at {url.host}:{url.port or 5432} refused user 'no_such_tunekeeper_role'"
    )


async def test_a_sqlite_path_in_a_missing_directory(tmp_path: Path, emulator: Emulator) -> None:
    path = tmp_path / "no-such-dir" / "tunekeeper.db"
    status, line, _ = await refusal(sqlite_url_of(path), emulator)
    assert status == EX_CONFIG
    assert line == f"database: {path} cannot be opened: directory {path.parent} does not exist"
    assert not path.parent.exists()  # nothing made


async def test_a_file_that_is_not_sqlite(tmp_path: Path, emulator: Emulator) -> None:
    path = tmp_path / "tunekeeper.db"
    path.write_text("these are someone's notes, not a database\n" * 100)
    before = path.read_bytes()
    status, line, _ = await refusal(sqlite_url_of(path), emulator)
    assert status == EX_CONFIG
    assert line == f"database: {path} is not a SQLite database file"
    assert path.read_bytes() == before


async def test_the_http_port_taken(sqlite_url: str, emulator: Emulator) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, line, event = await refusal(sqlite_url, emulator, {"TUNEKEEPER_HTTP__PORT": str(port)})
    assert status == EX_UNAVAILABLE
    assert line == f"http: cannot listen on 127.0.0.1:{port}: address already in use (http.host, http.port)"
    assert event["problem"] == "http_listen"


@pytest.mark.parametrize("host", ["", "   "])
async def test_an_empty_http_host_is_a_configuration_error(sqlite_url: str, emulator: Emulator, host: str) -> None:
    """Empty would bind every interface: it is refused rather than taken to mean that."""
    status, stdout, stderr = await run_once(
        daemon_environment(sqlite_url, emulator.base_url, {"TUNEKEEPER_HTTP__HOST": host})
    )
    assert status == EX_CONFIG
    [line] = stderr.splitlines()
    assert "http.host" in line and "TUNEKEEPER_HTTP__HOST" in line
    assert stdout == ""


def test_the_demo_refuses_a_step_of_zero_seconds_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tunekeeper", "demo", "--step-seconds", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == EX_USAGE_ARGUMENT == 2
    assert done.stderr == "demo: --step-seconds must be a positive number of seconds, got 0\n"
    assert done.stdout == ""


def test_a_one_shot_purge_says_the_same_in_one_line() -> None:
    port = closed_port()
    url = URL.create("postgresql+asyncpg", "tunekeeper", PASSWORD, "127.0.0.1", port, "jobs")
    env = daemon_environment(url.render_as_string(hide_password=False), "http://127.0.0.1:9")
    done = subprocess.run(
        [sys.executable, "-m", "tunekeeper", "purge", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == EX_UNAVAILABLE
    assert done.stderr == f"database: cannot reach PostgreSQL at 127.0.0.1:{port}: connection refused\n"
    assert PASSWORD not in done.stdout + done.stderr
