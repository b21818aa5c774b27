"""The schema's version: apply the Alembic migrations, and check a database against the code.

Alembic is driven from code (no alembic.ini): the database url comes from the caller and the migration scripts
ship inside the package, next to this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from tunekeeper.db.engine import make_engine

if TYPE_CHECKING:
    from alembic.config import Config

HEAD_REVISION = "0007"
"""The revision this code works with; a test checks that it is the migration history's head."""

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Any constant works, as long as every replica uses the same one: it serializes concurrent upgrades.
_UPGRADE_LOCK_KEY = 0x74756E656B6565  # "tunekee"


class SchemaMismatch(Exception):
    """The database's schema revision is not the one this code needs; the message says what to run."""


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config  # Alembic is imported only where migrations are run or inspected

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # '%' is ConfigParser's interpolation character; a percent-encoded password must survive it.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


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
    from alembic import command

    config = alembic_config(url)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's revision, or None when it has never been migrated."""
    async with engine.connect() as connection:
        heads = await connection.run_sync(_current_heads)
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


def _current_heads(connection: sa.Connection) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    heads: tuple[str, ...] = MigrationContext.configure(connection).get_current_heads()
    return heads


def _is_known(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        script = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError:  # an unknown id; alembic turns its ResolutionError into this
        return False
    # get_revision also resolves unique prefixes: only the exact id counts as known
    return script is not None and script.revision == revision


def script_head() -> str | None:
    """The head of the migration scripts shipped with this code."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
