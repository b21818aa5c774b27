"""Noticing, cheaply, that someone else wrote to a SQLite database: SQLite's counterpart of LISTEN/NOTIFY.

Two parts. `SqliteChanges` answers "has anything changed?": `PRAGMA data_version` on one long-lived connection
changes exactly when another connection has committed a change to the file (a producer's INSERT, a cancel
request, or the daemon's own pool). It runs on the event loop's thread through the standard library's sqlite3:
a shared lock taken and dropped and the WAL index read, three system calls and some tens of microseconds, where
a hop to aiosqlite's thread and back would cost several times that.

`WalWrites` says when to ask. Asking on a timer means waking the process for it, and on an idle daemon the
wake-ups, not the checks, are what costs. Every commit writes to the database's write-ahead log, and on Linux
inotify reports those writes: an idle database then wakes nobody (but for a look every BACKSTOP seconds) and a
producer's commit is seen within milliseconds. `follow` ties the two together; where inotify is missing it asks
every `interval` instead.

Given a `FileGuard`, every look also checks that the path still names the database file that was opened, and
inotify reports the file's deletion or replacement (its link count changing, or its rename) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import sqlite3
import struct
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

from sqlalchemy.engine import make_url

from tunekeeper.db.fileguard import DatabaseFileReplaced, FileGuard
from tunekeeper.logs import get_logger

log = get_logger(__name__)

# A commit's first write to the log comes before the commit is visible: its other pages, and for a producer with
# synchronous=FULL an fsync, come first. So after a write the change is looked for again at growing gaps, from
# SETTLE_FIRST to SETTLE_GAP (or the watch interval, if shorter), for SETTLE_FOR seconds.
SETTLE_FIRST = 0.001
SETTLE_GAP = 0.05
SETTLE_FOR = 0.5
# With inotify, a look anyway after this long without a reported write. It finds a commit that took longer than
# SETTLE_FOR to land; and a change found when no write was reported at all means a filesystem that does not
# report other processes' writes (some network and FUSE ones), which is then polled.
BACKSTOP = 5.0

_IN_MODIFY = 0x00000002
_IN_ATTRIB = 0x00000004  # on the database file: its link count changed (deleted, or renamed over)
_IN_MOVE_SELF = 0x00000800
_IN_DELETE_SELF = 0x00000400
_IN_IGNORED = 0x00008000  # the watch is gone: the file was deleted or its filesystem unmounted
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then len bytes of name)


class SqliteChanges:
    def __init__(self, url: str) -> None:
        self.path = make_url(url).database or ""
        self._connection: sqlite3.Connection | None = None
        self._seen: int | None = None

    @property
    def wal_path(self) -> str:
        return self.path + "-wal"

    def __enter__(self) -> Self:
        self._connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        self.changed()  # the first read also opens (in WAL mode, creates) the log that WalWrites watches
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


class WalWrites:
    """Writes to one file (the write-ahead log), as Linux's inotify reports them; `open` raises OSError elsewhere.
    Optionally also the deletion, renaming or replacement of another (the database file), reported alike.

    The descriptor is watched only inside `wait`, so writes that happen in between (the daemon's own, under
    load) queue up in the kernel as one pending event and wake nobody.
    """

    def __init__(self, fd: int, wal_watch: int) -> None:
        self._fd = fd
        self._wal_watch = wal_watch
        self.alive = True  # False once the kernel has dropped the log's watch

    @classmethod
    def open(cls, path: str, database: str | None = None) -> WalWrites:
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "inotify_init1"):
            raise OSError(errno.ENOSYS, "inotify is not available on this system")
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            raise _errno_error("inotify_init1")
        watches = [(path, _IN_MODIFY)]
        if database is not None:
            watches.append((database, _IN_ATTRIB | _IN_MOVE_SELF | _IN_DELETE_SELF))
        numbers = []
        for watched, mask in watches:
            number = int(libc.inotify_add_watch(fd, os.fsencode(watched), mask))
            if number < 0:
                error = _errno_error(f"inotify_add_watch {watched}")
                os.close(fd)
                raise error
            numbers.append(number)
        return cls(fd, numbers[0])

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    async def wait(self) -> None:
        """Return once the file has been written to since the last call, or the watch has ended (see `alive`)."""
        if self._drain():
            return
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(self._fd, wake)
        try:
            await readable
        finally:
            loop.remove_reader(self._fd)
        self._drain()

    def _drain(self) -> bool:
        """Read every pending event; True if there was any."""
        found = False
        while True:
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                return found
            found = True
            if any(mask & _IN_IGNORED for watch, mask in _events(data) if watch == self._wal_watch):
                self.alive = False


def _events(data: bytes) -> Iterator[tuple[int, int]]:
    """(watch descriptor, mask) of each event."""
    offset = 0
    while offset + _EVENT.size <= len(data):
        watch, mask, _, name_length = _EVENT.unpack_from(data, offset)
        yield watch, mask
        offset += _EVENT.size + name_length


def _errno_error(what: str) -> OSError:
    number = ctypes.get_errno()
    return OSError(number, f"{what}: {os.strerror(number)}")


async def follow(
    url: str,
    interval: float,
    on_change: Callable[[], None],
    on_failure: Callable[[], None] = lambda: None,
    guard: FileGuard | None = None,
) -> None:
    """Call `on_change` when another connection has committed to the SQLite database at `url`; until cancelled,
    or until `guard` finds the database file deleted or replaced (DatabaseFileReplaced is raised).

    With inotify: after each write to the log, at most once per `interval`. Without it, or once it has proved
    unreliable here: by looking every `interval`. A failed look is logged (`change_watch_failed`) and reported
    to `on_failure`.
    """
    with (
        SqliteChanges(url) as changes,
        _writes_or_none(changes.wal_path, changes.path if guard else None, interval) as writes,
    ):
        checks = _Checks(changes, guard, on_failure)
        if writes is not None:
            reason = await _follow_writes(checks, writes, interval, on_change)
            log.warning("change_watch_polling", reason=reason, interval=interval)
        while True:
            await asyncio.sleep(interval)
            if checks.look():
                on_change()


async def _follow_writes(checks: _Checks, writes: WalWrites, interval: float, on_change: Callable[[], None]) -> str:
    """Follow the log's writes until they can no longer be trusted to announce commits; the reason why."""
    unseen_write = True  # a write reported (or, while starting, possibly missed) whose commit was not seen yet
    while writes.alive:
        try:
            async with asyncio.timeout(BACKSTOP):
                await writes.wait()
        except TimeoutError:
            if checks.look():
                on_change()
                if not unseen_write:
                    return "a commit arrived without a reported write to the log"
            unseen_write = False
            continue
        if await _settle(checks, interval):
            unseen_write = False
            on_change()
            await asyncio.sleep(interval)  # under a stream of writes, one look per interval
        else:
            unseen_write = True
    return "the log's inotify watch ended"


@contextlib.contextmanager
def _writes_or_none(path: str, database: str | None, interval: float) -> Iterator[WalWrites | None]:
    try:
        writes = WalWrites.open(path, database)
    except OSError as exc:
        log.info("change_watch_polling", reason=str(exc), interval=interval)
        yield None
        return
    try:
        yield writes
    finally:
        writes.close()


async def _settle(checks: _Checks, interval: float) -> bool:
    """Whether a commit shows up within SETTLE_FOR of a write to the log (see SETTLE_FIRST)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + SETTLE_FOR
    longest = min(SETTLE_GAP, interval)
    gap = SETTLE_FIRST
    while True:
        seen = checks.look()
        if seen is None:  # logged; the next write looks again
            return False
        if seen or loop.time() >= give_up:
            return seen
        await asyncio.sleep(gap)
        gap = min(2 * gap, longest)


class _Checks:
    def __init__(self, changes: SqliteChanges, guard: FileGuard | None, on_failure: Callable[[], None]) -> None:
        self.changes = changes
        self.guard = guard
        self.on_failure = on_failure

    def look(self) -> bool | None:
        """Whether another connection committed since the last look; None if the look failed (logged).
        DatabaseFileReplaced if the guard finds the file deleted or replaced."""
        try:
            if self.guard is not None:
                self.guard.check()
            return self.changes.changed()
        except DatabaseFileReplaced:
            raise
        except (sqlite3.Error, OSError) as exc:
            log.warning("change_watch_failed", error=str(exc))
            self.on_failure()
            return None
