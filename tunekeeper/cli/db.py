"""`tunekeeper db upgrade | check`: bring the database schema to this code's revision, or check that it is."""

from __future__ import annotations

import argparse
import asyncio
import json

from tunekeeper.cli.database import reporting_database_errors
from tunekeeper.cli.usage import add_command
from tunekeeper.config import load_settings
from tunekeeper.db.engine import make_engine, missing_sqlite_file
from tunekeeper.db.migrate import HEAD_REVISION, SchemaMismatch, check_schema, current_revision, upgrade
from tunekeeper.secrecy import display_url


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("db", help="database schema: upgrade or check", description="The database schema.")
    commands = parser.add_subparsers(dest="db_command", required=True, metavar="{upgrade,check}")
    add_command(
        commands,
        "upgrade",
        summary=f"apply the migrations up to revision {HEAD_REVISION} (safe to run from several replicas at once)",
        description=f"Create the schema, or bring it to revision {HEAD_REVISION}, this code's. Safe to run from\n"
        "several replicas at once: one migrates, the others wait and find it done. Run it before a new release.",
        exits={1: "the database cannot be reached, or a migration failed (nothing of it is kept)"},
    ).set_defaults(func=run_upgrade)
    check = add_command(
        commands,
        "check",
        summary="print the database's revision; exit status 1 unless it is the one this code needs",
        description=f"Print the database's schema revision and whether it is {HEAD_REVISION}, the one this code\n"
        "needs. A missing SQLite file is reported, not created.",
        exits={1: "the schema is behind or ahead of this code, the file is missing, or the database cannot be reached"},
    )
    check.add_argument("--json", action="store_true", help="one JSON object: database, revision, expected, current")
    check.set_defaults(func=run_check)


def _database_url(args: argparse.Namespace) -> str:
    return load_settings(args.config).database.url  # a ConfigError goes up to main: exit 78


def _shown(url: str) -> str:
    return display_url(url)


def run_upgrade(args: argparse.Namespace) -> int:
    url = _database_url(args)

    def run() -> int:
        asyncio.run(upgrade(url))
        print(f"{_shown(url)}: at revision {HEAD_REVISION}")
        return 0

    return reporting_database_errors(run)


def run_check(args: argparse.Namespace) -> int:
    url = _database_url(args)
    if missing_sqlite_file(url) is not None:  # connecting would create an empty file
        return _report_check(
            args, url, None, f"no such database file, the code needs {HEAD_REVISION}: run `tunekeeper db upgrade`"
        )
    return reporting_database_errors(lambda: asyncio.run(_check(args, url)))


async def _check(args: argparse.Namespace, url: str) -> int:
    engine = make_engine(url)
    try:
        revision = await current_revision(engine)
        await check_schema(engine)
    except SchemaMismatch as mismatch:
        return _report_check(args, url, revision, str(mismatch))
    finally:
        await engine.dispose()
    return _report_check(args, url, revision, None)


def _report_check(args: argparse.Namespace, url: str, revision: str | None, problem: str | None) -> int:
    if args.json:
        report = {"database": _shown(url), "revision": revision, "expected": HEAD_REVISION, "current": problem is None}
        print(json.dumps(report | {"problem": problem}))
    elif problem is None:
        print(f"{_shown(url)}: at revision {revision}, up to date")
    else:
        print(f"{_shown(url)}: {problem}")
    return 0 if problem is None else 1
