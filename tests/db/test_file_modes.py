"""A SQLite database made by tunekeeper, and the WAL and shared-memory files beside it, are its owner's only,
whatever the umask (outside systemd, whose UMask=0077 does the same); an existing file keeps its mode."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import sqlite_url_of
from tunekeeper.db.engine import make_engine
from tunekeeper.db.migrate import upgrade


@pytest.fixture
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("usual_umask")
async def test_a_new_database_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    path = tmp_path / "tunekeeper.db"
    url = sqlite_url_of(path)
    await upgrade(url)
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:  # a write, with the connection open: the WAL and SHM exist now
            await conn.execute(sa.text("INSERT INTO tuning_jobs (display_name, training_data) VALUES ('x', '[]')"))
            wal, shm = path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")
            assert wal.exists() and shm.exists()
            assert {mode(path), mode(wal), mode(shm)} == {0o600}
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("usual_umask")
async def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    path.touch()
    path.chmod(0o640)  # an operator's choice: a group of readers
    await upgrade(sqlite_url_of(path))
    assert mode(path) == 0o640
