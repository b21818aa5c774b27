"""Noticing, cheaply, that someone else wrote to a SQLite database: SQLite's counterpart of LISTEN/NOTIFY.

`PRAGMA data_version` on one long-lived connection changes exactly when another connection has committed a
change to the file: a producer's INSERT, a cancel request, or another part of the daemon. It reads a counter
from the WAL index in shared memory: no lock, no file I/O, a few microseconds. That is why it runs on the event
loop's own thread through the standard library's sqlite3: a hop to aiosqlite's thread and back would cost a
hundred times the query, and an idle daemon asks several times a second.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType
from typing import Self

from sqlalchemy.engine import make_url


class SqliteChanges:
    def __init__(self, url: str) -> None:
        self.path = make_url(url).database or ""
        self._connection: sqlite3.Connection | None = None
        self._seen: int | None = None

    def __enter__(self) -> Self:
        self._connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        self.changed()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def changed(self) -> bool:
        """True if another connection committed a change since the last call."""
        assert self._connection is not None, "use SqliteChanges as a context manager"
        row = self._connection.execute("PRAGMA data_version").fetchone()
        version = int(row[0]) if row else 0
        changed = self._seen is not None and version != self._seen
        self._seen = version
        return changed
