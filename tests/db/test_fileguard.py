"""FileGuard on a real SQLite file: once the path names another file (deleted, renamed away, replaced), nothing
more is begun or committed through the engine, so nothing is written where nobody will look."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import sqlite_url_of
from tunekeeper.db import watch
from tunekeeper.db.engine import make_engine
from tunekeeper.db.fileguard import DatabaseFileReplaced, FileGuard, guard_engine


def make_database(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, what TEXT)")
    connection.close()


def rows(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return [what for (what,) in connection.execute("SELECT what FROM results ORDER BY id")]
    finally:
        connection.close()


def move_away(path: Path, to: Path) -> None:
    """Rename the database with its log and index, as one moves a database aside; its readers follow it."""
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            os.rename(source, to.with_name(to.name + suffix))


class Reports:
    def __init__(self) -> None:
        self.errors: list[DatabaseFileReplaced] = []

    def __call__(self, error: DatabaseFileReplaced) -> None:
        self.errors.append(error)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "tunekeeper.db"
    make_database(path)
    return path


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
async def engine(database: Path, reports: Reports) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(sqlite_url_of(database), pool_size=1)
    guard_engine(engine, FileGuard(str(database), reports))
    yield engine
    await engine.dispose()


async def write(engine: AsyncEngine, what: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(sa.text("INSERT INTO results (what) VALUES (:what)"), {"what": what})


async def test_an_unchanged_file_is_left_alone(engine: AsyncEngine, database: Path, reports: Reports) -> None:
    for n in range(20):
        await write(engine, f"result {n}")
    assert len(rows(database)) == 20
    assert reports.errors == []


async def test_a_commit_into_a_file_replaced_during_the_transaction_is_refused(
    engine: AsyncEngine, database: Path, tmp_path: Path, reports: Reports
) -> None:
    """The daemon's result would have gone into the file moved aside; it goes nowhere, and says why."""
    await write(engine, "before")
    moved = tmp_path / "moved-aside.db"

    async def record_a_result_while_the_file_is_replaced() -> None:
        async with engine.begin() as connection:
            await connection.execute(sa.text("INSERT INTO results (what) VALUES ('a finished job')"))
            move_away(database, moved)
            make_database(database)

    with pytest.raises(DatabaseFileReplaced, match="was replaced by another file"):
        await record_a_result_while_the_file_is_replaced()
    assert rows(moved) == ["before"]
    assert rows(database) == []
    assert len(reports.errors) == 1


async def test_no_transaction_begins_on_a_deleted_file(engine: AsyncEngine, database: Path, reports: Reports) -> None:
    await write(engine, "before")
    for suffix in ("", "-wal", "-shm"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)
    for _ in range(3):
        with pytest.raises(DatabaseFileReplaced, match="was deleted"):
            await write(engine, "after")
    assert len(reports.errors) == 1  # told once
    assert database.name not in os.listdir(database.parent)  # nor made again


async def test_a_new_connection_to_a_replaced_path_is_refused(
    engine: AsyncEngine, database: Path, tmp_path: Path
) -> None:
    """The pool may reconnect (after an error, or a dispose): the new connection would open the new file."""
    await write(engine, "before")
    await engine.dispose()
    move_away(database, tmp_path / "old.db")
    make_database(database)
    with pytest.raises(DatabaseFileReplaced):
        await write(engine, "after")
    assert rows(database) == []


async def test_the_change_watch_reports_a_replaced_file_at_once(database: Path, tmp_path: Path) -> None:
    """inotify reports the rename over the path without waiting for the watch's backstop look."""
    guard = FileGuard(str(database))
    engine = make_engine(sqlite_url_of(database), pool_size=1)
    guard_engine(engine, guard)
    try:
        await write(engine, "opened")  # the first connection fixes the identity
        following = asyncio.create_task(watch.follow(sqlite_url_of(database), 0.2, lambda: None, guard=guard))
        await write(engine, "seen")
        replacement = tmp_path / "replacement.db"
        make_database(replacement)
        os.replace(replacement, database)
        async with asyncio.timeout(watch.BACKSTOP / 2):
            with pytest.raises(DatabaseFileReplaced):
                await following
    finally:
        await engine.dispose()


async def test_the_polling_watch_reports_a_deleted_file(database: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_inotify(*args: object) -> watch.WalWrites:
        raise OSError("inotify is not available on this system")

    monkeypatch.setattr(watch.WalWrites, "open", no_inotify)
    guard = FileGuard(str(database))
    guard.opening()
    following = asyncio.create_task(watch.follow(sqlite_url_of(database), 0.05, lambda: None, guard=guard))
    await asyncio.sleep(0)
    os.unlink(database)
    async with asyncio.timeout(10):
        with pytest.raises(DatabaseFileReplaced, match="was deleted"):
            await following
