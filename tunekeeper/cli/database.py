"""What the commands for people share: one database opened for one action, and failures as one line.

Each command opens the configured database, checks that its schema is the one this code needs, does one thing
through the JobStore and disposes of the engine; a database problem ends it with one line and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

import sqlalchemy as sa

from tunekeeper.config import Settings, load_settings
from tunekeeper.db.engine import make_engine, missing_sqlite_file
from tunekeeper.db.migrate import SchemaMismatch, check_schema
from tunekeeper.db.records import UnreadableRow
from tunekeeper.db.store import JobStore
from tunekeeper.logs import first_line

EXIT_FAILED = 1
EXIT_INVALID = 2  # as for argparse's usage errors: the request itself is wrong

StoreAction = Callable[[JobStore], Awaitable[int]]


def fail(message: str, status: int = EXIT_FAILED) -> int:
    print(message, file=sys.stderr)
    return status


def with_store(args: argparse.Namespace, action: StoreAction, settings: Settings | None = None) -> int:
    """Run `action` on a JobStore for the configured database; database problems become one line, exit 1."""
    if settings is None:
        settings = load_settings(args.config)  # a ConfigError goes up to main: exit 78
    missing = missing_sqlite_file(settings.database.url)
    if missing is not None:  # connecting would create an empty file there, and then fail the schema check
        return fail(f"no database at {missing}: `tunekeeper db upgrade` creates it (database.url)")

    async def run() -> int:
        engine = make_engine(settings.database.url, settings.database.pool_size)
        try:
            await check_schema(engine)
            return await action(JobStore(engine))
        finally:
            await engine.dispose()

    return reporting_database_errors(lambda: asyncio.run(run()))


def reporting_database_errors(run: Callable[[], int]) -> int:
    """`run()`, with a database problem ending in one line on stderr and exit status 1, not a traceback."""
    try:
        return run()
    except (SchemaMismatch, UnreadableRow) as exc:
        return fail(str(exc))
    except sa.exc.DBAPIError as exc:
        return fail(f"database error: {first_line(exc.orig if exc.orig is not None else exc)}")
    except OSError as exc:  # e.g. a PostgreSQL server that refuses the connection
        return fail(f"cannot reach the database: {first_line(exc)}")
