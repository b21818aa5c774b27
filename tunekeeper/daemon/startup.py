"""What the daemon needs before it starts, and what stops it: on SQLite the file's lock and identity guard, and a
database that cannot be opened told as one line and an exit status (StartupFailed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from tunekeeper.config import EX_CONFIG, Settings
from tunekeeper.db import filelock
from tunekeeper.db.fileguard import DatabaseFileReplaced, FileGuard
from tunekeeper.db.problems import database_problem
from tunekeeper.exits import EX_TEMPFAIL, EX_UNAVAILABLE, StartupFailed


def database_startup_failure(url: str, error: BaseException) -> StartupFailed:
    if isinstance(error, DatabaseFileReplaced):  # while starting: start again, on the new file
        return StartupFailed(str(error), problem="database_file_replaced", status=EX_TEMPFAIL)
    problem = database_problem(url, error)
    status = EX_CONFIG if problem.lasting else EX_UNAVAILABLE
    return StartupFailed(problem.message, problem="database", status=status)


@contextlib.contextmanager
def one_daemon_per_file(settings: Settings) -> Iterator[FileGuard | None]:
    """On SQLite: hold the file's lock for the block, and a guard on its identity; nothing on PostgreSQL."""
    url = make_url(settings.database.url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        yield None
        return
    path = Path(url.database)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(filelock.holding(path))
        except OSError as exc:  # the lock file cannot be made: a missing directory, say
            raise database_startup_failure(settings.database.url, exc) from exc
        yield FileGuard(str(path))
