"""Database engines: connection settings per backend, the same everywhere tunekeeper opens a database."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from tunekeeper.config import IDLE_IN_TRANSACTION_TIMEOUT, POSTGRES_POOL_SIZE
from tunekeeper.db.types import decode_text, dump_json, load_json

APPLICATION_NAME = "tunekeeper"
# The server probes an idle connection after this many seconds, every PROBE_INTERVAL, and drops it after
# PROBE_COUNT unanswered probes: a replica whose host vanished (no RST) frees its locks within about a minute
# instead of the kernel's two hours.
KEEPALIVE_IDLE, KEEPALIVE_PROBE_INTERVAL, KEEPALIVE_PROBE_COUNT = 30, 10, 3

_SQLITE_PRAGMAS = (
    # busy_timeout first: switching to WAL needs a lock that another connection may briefly hold
    "PRAGMA busy_timeout=5000",
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)


def missing_sqlite_file(url: str) -> Path | None:
    """The path of a SQLite database file that does not exist (opening it would create it empty), else None."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:") or "uri" in parsed.query:
        return None  # not a file, or a `file:` URI SQLite resolves itself
    path = Path(parsed.database)
    return None if path.exists() else path


def _create_private_sqlite_file(url: str) -> None:
    """Create a missing SQLite database file readable by its owner only (0600, less under a stricter umask).

    SQLite would create it with 0644 under the usual umask, and gives the WAL and shared-memory files it
    makes beside it the main file's mode: the jobs, their data and their results are not for everyone on the
    host. An existing file keeps the mode it has (an operator's choice). If the file cannot be made here (no
    such directory, say), SQLite says so when it opens it, as before."""
    path = missing_sqlite_file(url)
    if path is None or str(path).startswith("file:"):
        return
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    os.close(descriptor)  # an empty file is an empty database to SQLite


def postgres_session_settings(idle_in_transaction_timeout: float = IDLE_IN_TRANSACTION_TIMEOUT) -> dict[str, str]:
    """What every tunekeeper connection to PostgreSQL sets for its session.

    A replica frozen inside a transaction (SIGSTOP, a VM paused, a debugger) would hold its locks, the dispatch
    claim's advisory lock included, for as long as its host answers TCP: the server ends such a session after
    `idle_in_transaction_timeout` seconds, which rolls its transaction back and frees the locks.
    """
    return {
        "application_name": APPLICATION_NAME,  # named in pg_stat_activity, for operators
        "idle_in_transaction_session_timeout": str(round(idle_in_transaction_timeout * 1000)),
        "tcp_keepalives_idle": str(KEEPALIVE_IDLE),
        "tcp_keepalives_interval": str(KEEPALIVE_PROBE_INTERVAL),
        "tcp_keepalives_count": str(KEEPALIVE_PROBE_COUNT),
    }


def make_engine(
    url: str,
    pool_size: int | None = None,
    *,
    idle_in_transaction_timeout: float = IDLE_IN_TRANSACTION_TIMEOUT,
    write_lock_held: Callable[[float], None] | None = None,
    **kwargs: Any,
) -> AsyncEngine:
    """An engine for `url`; on SQLite every connection gets the PRAGMAs and every transaction is IMMEDIATE.

    `pool_size` on SQLite: exactly that many connections, no overflow. A second connection buys no concurrency
    there (each transaction takes the write lock up front) and overflow ones would be opened and closed under
    load, each a thread, an open and the PRAGMAs; the daemon keeps one (DatabaseSettings.daemon_pool_size).
    None keeps SQLAlchemy's default pool, for callers (tests, commands) that may hold a connection while they
    open another. On PostgreSQL: `pool_size` connections (default POSTGRES_POOL_SIZE), as many again in overflow,
    each with `postgres_session_settings`.

    `write_lock_held`, on SQLite, is told how long each transaction held the write lock (seconds): how long a
    producer's INSERT may have had to wait.
    """
    # JSON in and out through one boundary (db/types.py): values the database refuses are made storable, and
    # what a producer left too deep to read loads as UNREADABLE instead of raising.
    kwargs.setdefault("json_serializer", dump_json)
    kwargs.setdefault("json_deserializer", load_json)
    if make_url(url).get_backend_name() == "sqlite":
        _create_private_sqlite_file(url)
        if pool_size is not None and "poolclass" not in kwargs:
            kwargs.setdefault("pool_size", pool_size)
            kwargs.setdefault("max_overflow", 0)
        engine = create_async_engine(url, hide_parameters=True, **kwargs)
        _make_sqlite_transactions_immediate(engine, write_lock_held)
        return engine
    if kwargs.get("poolclass") is not NullPool:
        size = POSTGRES_POOL_SIZE if pool_size is None else pool_size
        kwargs.setdefault("pool_size", size)
        kwargs.setdefault("max_overflow", size)
    kwargs.setdefault("connect_args", {"server_settings": postgres_session_settings(idle_in_transaction_timeout)})
    engine = create_async_engine(url, pool_pre_ping=True, hide_parameters=True, **kwargs)
    # Many rows go in one INSERT statement rather than the driver's executemany, which leaves the protocol open
    # (no Sync) while it reads the answers: a process frozen there would keep its session "active", out of
    # idle_in_transaction_timeout's reach, and its locks with it.
    engine.dialect.use_insertmanyvalues_wo_returning = True
    return engine


def make_read_engine(url: str) -> AsyncEngine:
    """An engine for reading: on SQLite deferred transactions (no write lock) with a busy timeout and
    `query_only`; on PostgreSQL a small pool of read-only sessions."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_async_engine(url, hide_parameters=True, pool_size=2, max_overflow=0)

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA busy_timeout=5000")
                cursor.execute("PRAGMA query_only=1")
            finally:
                cursor.close()

        @sa.event.listens_for(engine.sync_engine, "begin")
        def _on_begin(connection: sa.Connection) -> None:
            connection.exec_driver_sql("BEGIN")  # deferred: one consistent read, no lock on writers

        return engine
    return create_async_engine(
        url,
        pool_size=2,
        max_overflow=2,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={
            "server_settings": postgres_session_settings()
            | {"application_name": "tunekeeper-web", "default_transaction_read_only": "on"}
        },
    )


def _make_sqlite_transactions_immediate(
    engine: AsyncEngine, write_lock_held: Callable[[float], None] | None = None
) -> None:
    # SQLAlchemy's documented recipe: the driver stops emitting its own deferred BEGIN and we emit BEGIN
    # IMMEDIATE, so a transaction takes the write lock up front (waiting busy_timeout for it) instead of
    # failing with SQLITE_BUSY when a reader later tries to become a writer.
    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        # text that is not UTF-8 must fail its row, not the query (see types.decode_text)
        dbapi_connection.driver_connection.text_factory = decode_text
        cursor = dbapi_connection.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        connection.info[_LOCKED_SINCE] = time.perf_counter()

    if write_lock_held is None:
        return

    def _on_end(connection: sa.Connection) -> None:
        since = connection.info.pop(_LOCKED_SINCE, None)
        if since is not None:
            write_lock_held(time.perf_counter() - since)

    sa.event.listen(engine.sync_engine, "commit", _on_end)
    sa.event.listen(engine.sync_engine, "rollback", _on_end)


_LOCKED_SINCE = "tunekeeper_write_locked_since"
