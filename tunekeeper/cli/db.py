"""`tunekeeper db upgrade | check`: bring the database schema to this code's revision, or check that it is."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tunekeeper.config import load_settings
from tunekeeper.db.engine import make_engine
from tunekeeper.db.migrate import HEAD_REVISION, SchemaMismatch, check_schema, current_revision, upgrade


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("db", help="database schema: upgrade or check")
    commands = parser.add_subparsers(dest="db_command", required=True, metavar="{upgrade,check}")
    commands.add_parser(
        "upgrade",
        help=f"apply the migrations up to revision {HEAD_REVISION} (safe to run from several replicas at once)",
    ).set_defaults(func=run_upgrade)
    commands.add_parser(
        "check", help="print the database's revision; exit status 1 unless it is the one this code needs"
    ).set_defaults(func=run_check)


def _database_url(args: argparse.Namespace) -> str:
    return load_settings(args.config).database.url  # a ConfigError goes up to main: exit 78


def _reporting_database_errors(run: Callable[[], int]) -> int:
    """Problems reaching the database end in one line on stderr and exit status 1, not a traceback."""
    try:
        return run()
    except sa.exc.DBAPIError as exc:
        return _fail(f"database error: {_first_line(exc.orig if exc.orig is not None else exc)}")
    except OSError as exc:  # e.g. a PostgreSQL server that refuses the connection
        return _fail(f"cannot reach the database: {_first_line(exc)}")


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def run_upgrade(args: argparse.Namespace) -> int:
    url = _database_url(args)

    def run() -> int:
        asyncio.run(upgrade(url))
        print(f"{_shown(url)}: at revision {HEAD_REVISION}")
        return 0

    return _reporting_database_errors(run)


def run_check(args: argparse.Namespace) -> int:
    url = _database_url(args)
    parsed = make_url(url)
    path = parsed.database if parsed.get_backend_name() == "sqlite" and "uri" not in parsed.query else None
    if path and path != ":memory:" and not Path(path).exists():
        # connecting would create an empty file
        print(f"{_shown(url)}: no such database file, the code needs {HEAD_REVISION}: run `tunekeeper db upgrade`")
        return 1
    return _reporting_database_errors(lambda: asyncio.run(_check(url)))


async def _check(url: str) -> int:
    engine = make_engine(url)
    try:
        revision = await current_revision(engine)
        await check_schema(engine)
    except SchemaMismatch as mismatch:
        print(f"{_shown(url)}: {mismatch}")
        return 1
    finally:
        await engine.dispose()
    print(f"{_shown(url)}: at revision {revision}, up to date")
    return 0
