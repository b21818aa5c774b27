"""The SQLite change watch: SqliteChanges notices writes by other connections, and only those; WalWrites wakes on
commits and on nothing else; `follow` turns a producer's commit into a call within milliseconds, and without
inotify still finds it by looking every interval."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.waiting import wait_until
from tunekeeper.db import watch
from tunekeeper.db.engine import make_engine
from tunekeeper.db.store import JobStore
from tunekeeper.db.watch import SqliteChanges, WalWrites

INSERT = "INSERT INTO tuning_jobs (display_name, training_data) VALUES ('x', '[]')"


def path_of(sqlite_url: str) -> Path:
    return Path(sqlite_url.removeprefix("sqlite+aiosqlite:///"))


def produce(sqlite_url: str) -> None:
    """One commit by a producer: another connection, as a separate program would make it."""
    with sqlite3.connect(path_of(sqlite_url)) as producer:
        producer.execute(INSERT)
    producer.close()


@pytest.fixture
def changes(sqlite_url: str) -> Iterator[SqliteChanges]:
    with SqliteChanges(sqlite_url) as opened:
        yield opened


@pytest.fixture
def wal_writes(changes: SqliteChanges) -> Iterator[WalWrites]:
    try:
        writes = WalWrites.open(changes.wal_path)
    except OSError as exc:
        pytest.skip(f"no inotify here: {exc}")
    yield writes
    writes.close()


@pytest.fixture
async def following(sqlite_url: str) -> AsyncIterator[Callable[[float], asyncio.Event]]:
    """Start `watch.follow` with a given interval; the event it returns is set on each change it reports."""
    tasks: list[asyncio.Task[None]] = []

    def start(interval: float) -> asyncio.Event:
        seen = asyncio.Event()
        tasks.append(asyncio.create_task(watch.follow(sqlite_url, interval, seen.set)))
        return seen

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_a_commit_by_another_connection_is_noticed_once(sqlite_url: str, changes: SqliteChanges) -> None:
    assert not changes.changed(), "nothing happened yet"
    producer = sqlite3.connect(path_of(sqlite_url))
    producer.execute(INSERT)
    assert not changes.changed(), "not committed yet"
    producer.commit()
    assert changes.changed()
    assert not changes.changed(), "each change is reported once"
    producer.execute("SELECT count(*) FROM tuning_jobs").fetchone()
    assert not changes.changed(), "reads are not changes"
    producer.close()


async def test_wal_writes_wake_on_a_commit_and_not_on_the_daemons_reads(sqlite_url: str, wal_writes: WalWrites) -> None:
    # The daemon's reads begin IMMEDIATE too (they take the write lock), yet write nothing to the log: an idle
    # daemon's own queries, the job counts among them, must not wake its watch.
    engine = make_engine(sqlite_url, pool_size=1)
    try:
        store = JobStore(engine)
        await store.count_by_state()
        await store.next_poll_due()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(wal_writes.wait(), timeout=0.3)
        produce(sqlite_url)
        await asyncio.wait_for(wal_writes.wait(), timeout=5)
        assert wal_writes.alive
    finally:
        await engine.dispose()


async def test_follow_sees_a_commit_at_once_rather_than_at_the_next_interval(
    sqlite_url: str, wal_writes: WalWrites, following: Callable[[float], asyncio.Event]
) -> None:
    seen = following(600.0)  # polling would look only after ten minutes

    def committed_and_seen() -> bool:
        produce(sqlite_url)  # again on each try: the first may come before the watch has started
        return seen.is_set()

    await wait_until(committed_and_seen, within=5, message="a commit to be reported")


async def test_follow_looks_every_interval_where_inotify_is_missing(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, following: Callable[[float], asyncio.Event]
) -> None:
    def unavailable(path: str, database: str | None = None) -> WalWrites:
        raise OSError("inotify is not available on this system")

    monkeypatch.setattr(WalWrites, "open", unavailable)
    with capture_logs() as logs:
        seen = following(0.05)
        await wait_until(lambda: logs, within=5, message="the fallback to be logged")
        produce(sqlite_url)
        await wait_until(seen.is_set, within=5, message="the commit to be found by polling")
    assert logs[0]["event"] == "change_watch_polling"
    assert logs[0]["interval"] == 0.05


async def test_a_filesystem_that_does_not_report_writes_is_polled(
    sqlite_url: str,
    wal_writes: WalWrites,
    monkeypatch: pytest.MonkeyPatch,
    following: Callable[[float], asyncio.Event],
) -> None:
    async def never_reported(self: WalWrites) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(WalWrites, "wait", never_reported)
    monkeypatch.setattr(watch, "BACKSTOP", 0.05)
    with capture_logs() as logs:
        seen = following(0.05)

        def committed_and_switched() -> bool:
            produce(sqlite_url)  # the first change found may be one made while the watch was starting: no proof
            return bool(logs)

        await wait_until(committed_and_switched, within=5, message="the switch to polling")
        assert seen.is_set(), "the backstop reported what it found"
        seen.clear()
        produce(sqlite_url)
        await wait_until(seen.is_set, within=5, message="the next commit to be found by polling")
    assert logs[0]["event"] == "change_watch_polling"
    assert "without a reported write" in logs[0]["reason"]
