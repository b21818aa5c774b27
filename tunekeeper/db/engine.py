"""Database engines: connection settings per backend, the same everywhere tunekeeper opens a database."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

APPLICATION_NAME = "tunekeeper"

_SQLITE_PRAGMAS = (
    # busy_timeout first: switching to WAL needs a lock that another connection may briefly hold
    "PRAGMA busy_timeout=5000",
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)


def make_engine(url: str, pool_size: int = 5, **kwargs: Any) -> AsyncEngine:
    """An engine for `url`; on SQLite every connection gets the PRAGMAs and every transaction is IMMEDIATE."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_async_engine(url, hide_parameters=True, **kwargs)
        _make_sqlite_transactions_immediate(engine)
        return engine
    if kwargs.get("poolclass") is not NullPool:
        kwargs.setdefault("pool_size", pool_size)
        kwargs.setdefault("max_overflow", pool_size)
    # named in pg_stat_activity, for operators (the listener's connection has a name of its own)
    kwargs.setdefault("connect_args", {"server_settings": {"application_name": APPLICATION_NAME}})
    return create_async_engine(url, pool_pre_ping=True, hide_parameters=True, **kwargs)


def _make_sqlite_transactions_immediate(engine: AsyncEngine) -> None:
    # SQLAlchemy's documented recipe: the driver stops emitting its own deferred BEGIN and we emit BEGIN
    # IMMEDIATE, so a transaction takes the write lock up front (waiting busy_timeout for it) instead of
    # failing with SQLITE_BUSY when a reader later tries to become a writer.
    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
