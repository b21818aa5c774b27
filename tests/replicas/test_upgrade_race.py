"""Replicas deployed together all run `tunekeeper db upgrade` at start-up: on a fresh database they must all
succeed (an advisory lock serializes them; the later ones find nothing to do)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from tests.pg import PostgresServer
from tunekeeper.db.migrate import HEAD_REVISION

UPGRADERS = 3


@pytest.fixture
async def fresh_database(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """The name of an empty database, never migrated."""
    name = await asyncio.to_thread(postgres_server.create_database, migrated=False)
    yield name
    await asyncio.to_thread(postgres_server.drop_database, name)


async def test_upgrade_commands_started_together_on_a_fresh_database_all_succeed(
    postgres_server: PostgresServer, fresh_database: str, tmp_path: Path
) -> None:
    url = postgres_server.url(fresh_database)
    env = {key: value for key, value in os.environ.items() if not key.startswith("TUNEKEEPER_")}
    env["TUNEKEEPER_DATABASE__URL"] = url
    config = tmp_path / "tunekeeper.toml"
    config.write_text("")  # no /etc/tunekeeper/tunekeeper.toml of the machine's in the way
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tunekeeper",
            "--config",
            str(config),
            "db",
            "upgrade",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(UPGRADERS)
    ]
    async with asyncio.timeout(60):
        outputs = await asyncio.gather(*(process.communicate() for process in processes))
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()
        assert stdout.decode().strip().endswith(f"at revision {HEAD_REVISION}"), stdout.decode()

    def applied() -> list[tuple[str, ...]]:
        with psycopg.connect(postgres_server.dsn(fresh_database)) as connection:
            return [tuple(row) for row in connection.execute("SELECT version_num FROM alembic_version").fetchall()]

    assert await asyncio.to_thread(applied) == [(HEAD_REVISION,)]
