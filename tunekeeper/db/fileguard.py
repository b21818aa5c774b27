"""Whether the SQLite file the daemon opened is still the one its path names.

A database file deleted, or replaced (renamed over, restored from a copy), under a running daemon leaves the
daemon's connections on the old file: what it writes goes where nobody will read it, and the new file's jobs
wait. `FileGuard` records the file's identity (device and inode) when the first connection opens it, then
compares the path's identity with it: for every new connection, before every transaction begins and before it
commits (`guard_engine`: a `stat` each, a few microseconds), and whenever the change watch looks. A mismatch
raises `DatabaseFileReplaced` (an OSError, so the workers take it for a database that is not there) and, the
first time, calls `on_replaced`: the daemon then stops, to be started again on the new file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

FileIdentity = tuple[int, int]  # st_dev, st_ino


class DatabaseFileReplaced(OSError):
    """The path no longer names the database file that was opened."""


class FileGuard:
    def __init__(self, path: str, on_replaced: Callable[[DatabaseFileReplaced], None] = lambda error: None) -> None:
        self.path = path
        self.on_replaced = on_replaced
        self.opened: FileIdentity | None = None  # set by the first connection
        self.replaced: DatabaseFileReplaced | None = None  # the first mismatch found

    def opening(self) -> None:
        """A connection has just opened the path: the first one fixes the identity, later ones must match it."""
        if self.opened is None:
            # not created yet: the schema check refuses such a database anyway
            with contextlib.suppress(FileNotFoundError):
                self.opened = _identity(self.path)
            return
        self.check()

    def check(self) -> None:
        """Raise DatabaseFileReplaced if the path names another file than the one opened, or none."""
        if self.replaced is not None:
            raise self.replaced
        if self.opened is None:
            return
        try:
            now: FileIdentity | None = _identity(self.path)
        except FileNotFoundError:
            now = None
        if now == self.opened:
            return
        how = "was deleted" if now is None else "was replaced by another file"
        self.replaced = DatabaseFileReplaced(f"the SQLite database file {self.path} {how} while the daemon ran")
        self.on_replaced(self.replaced)
        raise self.replaced


def _identity(path: str) -> FileIdentity:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def guard_engine(engine: AsyncEngine, guard: FileGuard) -> None:
    """Check `guard` as each connection opens, before each transaction begins and before each commit."""

    def on_connect(_dbapi_connection: Any, _record: Any) -> None:
        guard.opening()

    def on_begin_or_commit(_connection: sa.Connection) -> None:
        guard.check()

    # First in line: a transaction on a replaced file must not even take its lock.
    sa.event.listen(engine.sync_engine, "connect", on_connect, insert=True)
    sa.event.listen(engine.sync_engine, "begin", on_begin_or_commit, insert=True)
    sa.event.listen(engine.sync_engine, "commit", on_begin_or_commit, insert=True)
