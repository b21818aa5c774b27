"""Engines, and the schema's version: apply the Alembic migrations, and check a database against the code.

Alembic is driven from code (no alembic.ini): the database url comes from the caller and the migration scripts
ship inside the package, next to this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

HEAD_REVISION = "0001"
"""The revision this code works with; a test checks that it is the migration history's head."""

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Any constant works, as long as every replica uses the same one: it serializes concurrent upgrades.
_UPGRADE_LOCK_KEY = 0x74756E656B6565  # "tunekee"

_SQLITE_PRAGMAS = (
    # busy_timeout first: switching to WAL needs a lock that another connection may briefly hold
    "PRAGMA busy_timeout=5000",
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)


class SchemaMismatch(Exception):
    """The database's schema revision is not the one this code needs; the message says what to run."""


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # '%' is ConfigParser's interpolation character; a percent-encoded password must survive it.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def make_engine(url: str, pool_size: int = 5, **kwargs: Any) -> AsyncEngine:
    """An engine for `url`; on SQLite every connection gets the PRAGMAs and every transaction is IMMEDIATE."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_async_engine(url, **kwargs)
        _make_sqlite_transactions_immediate(engine)
        return engine
    if kwargs.get("poolclass") is not NullPool:
        kwargs.setdefault("pool_size", pool_size)
        kwargs.setdefault("max_overflow", pool_size)
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


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


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply the migrations up to `revision`, in one transaction; safe to run from several replicas at once."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Held until this transaction ends: a second replica waits here, then finds nothing to do.
                await connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_UPGRADE_LOCK_KEY)))
            await connection.run_sync(_run_upgrade, url, revision)
    finally:
        await engine.dispose()


def _run_upgrade(connection: sa.Connection, url: str, revision: str) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's revision, or None when it has never been migrated."""
    async with engine.connect() as connection:
        heads = await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_heads())
    if len(heads) > 1:
        raise SchemaMismatch(f"database has several revisions ({', '.join(sorted(heads))}); repair alembic_version")
    return heads[0] if heads else None


async def check_schema(engine: AsyncEngine) -> None:
    """Raise SchemaMismatch unless the database is exactly at HEAD_REVISION."""
    revision = await current_revision(engine)
    if revision == HEAD_REVISION:
        return
    if revision is not None and not _is_known(revision):
        raise SchemaMismatch(
            f"database is at revision {revision}, newer than this tunekeeper ({HEAD_REVISION}): upgrade tunekeeper"
        )
    shown = "(empty)" if revision is None else revision
    raise SchemaMismatch(
        f"database is at revision {shown}, the code needs {HEAD_REVISION}: run `tunekeeper db upgrade`"
    )


def _is_known(revision: str) -> bool:
    try:
        script = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError:  # an unknown id; alembic turns its ResolutionError into this
        return False
    # get_revision also resolves unique prefixes: only the exact id counts as known
    return script is not None and script.revision == revision


def script_head() -> str | None:
    """The head of the migration scripts shipped with this code."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
