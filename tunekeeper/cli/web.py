"""`tunekeeper web`: the status page served straight from the database, without a daemon (a host that runs
none, or one beside a fleet of PostgreSQL replicas). The same page the daemon serves at web.base_path."""

from __future__ import annotations

import argparse
import asyncio
import sys

from tunekeeper.cli.usage import add_command
from tunekeeper.config import load_settings, secrets_in
from tunekeeper.db.engine import missing_sqlite_file
from tunekeeper.logs import configure_logging


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "web",
        summary="serve the status page from the database (no daemon needed)",
        description="Serve the status page ([web] settings) straight from the database, for a host that runs no\n"
        "daemon or a fleet of replicas. Runs until SIGTERM or Ctrl-C.",
        exits={1: "the database cannot be opened (a missing SQLite file is not created)", 69: "the port is taken"},
    )
    parser.add_argument("--host", help="address to listen on (default: web.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: web.port, 9465; 0: any free port)")
    parser.set_defaults(func=web_command)


def web_command(args: argparse.Namespace) -> int:
    from tunekeeper.web.server import serve  # here, so that light commands start fast

    overrides = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    settings = load_settings(args.config)
    if overrides:
        settings = settings.model_copy(update={"web": settings.web.model_copy(update=overrides)})
    missing = missing_sqlite_file(settings.database.url)
    if missing is not None:  # connecting would create an empty file there, and then fail the schema check
        print(f"no database at {missing}: `tunekeeper db upgrade` creates it (database.url)", file=sys.stderr)
        return 1
    configure_logging(settings.log.level, settings.log.format, secrets=secrets_in(settings))
    return asyncio.run(serve(settings))
