"""One daemon per SQLite file: an advisory lock on a sidecar file (`<database>.lock`), taken at start-up.

The lock is `flock(2)` on an open descriptor, so the kernel releases it when the process ends, however it ends
(kill -9 included): there is never a stale lock to clear by hand. The holder writes its pid, host and start time
into the file, which a refused second daemon reads to name it. Readers (`jobs`, `show`) take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from tunekeeper.exits import EX_UNAVAILABLE, StartupFailed


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


class DatabaseInUse(StartupFailed):
    def __init__(self, database: Path, holder: str) -> None:
        super().__init__(
            f"database: {database} is in use by another tunekeeper daemon ({holder}); SQLite allows one daemon "
            "per database file (PostgreSQL lets replicas share one)",
            problem="database_in_use",
            status=EX_UNAVAILABLE,
        )


@contextlib.contextmanager
def holding(database: Path) -> Iterator[None]:
    """Hold the lock of `database` for the block; raise DatabaseInUse (naming the holder) if another process has
    it. OSError if the lock file cannot be opened (a missing directory, say)."""
    fd = os.open(lock_path(database), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatabaseInUse(database, _holder(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _describe_self().encode() + b"\n", 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a clean exit leaves no record of a holder that is gone
    finally:
        os.close(fd)  # releases the lock


def _describe_self() -> str:
    started = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started_at": started})


def _holder(fd: int) -> str:
    """The holder as it described itself; it may not have written yet, or the file may be someone else's."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        shown = f"pid {int(record['pid'])} on {str(record['host'])[:100]}, since {str(record['started_at'])[:40]}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
    return shown if shown.isprintable() else "holder unknown"
