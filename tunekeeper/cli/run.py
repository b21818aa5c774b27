"""`tunekeeper run`: the daemon in the foreground (as systemd runs it)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import TYPE_CHECKING

from tunekeeper.cli.usage import add_command
from tunekeeper.config import Settings, load_settings, require_credentials, secrets_in
from tunekeeper.logs import configure_logging

if TYPE_CHECKING:
    from aiohttp import web

    from tunekeeper.daemon.http import Mount


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "run",
        summary="run the daemon in the foreground",
        description="Run the daemon in the foreground, as systemd runs it: claim queued jobs, submit them, follow\n"
        "them to the end, evaluate, purge on schedule. JSON log lines on stdout. SIGTERM or SIGINT: stop claiming,\n"
        "let calls in flight finish (daemon.shutdown_grace), release leases, exit 0. SIGHUP: reload the config.",
        exits={
            1: "a bug (a traceback)",
            69: "something needed is not there now: the database server, the HTTP port, the SQLite file's lock",
            75: "the SQLite file was deleted or replaced while the daemon ran (systemd restarts it on the new one)",
        },
        notes="Start-up failures are one line on stderr and a startup_failed log event.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # SIGHUP's default action ends the process. The daemon handles it (a reload) only while its event loop
    # runs: from here, before the heavy imports, until the process exits, a SIGHUP outside that window
    # (systemctl reload during start-up or shutdown) is ignored rather than fatal.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from tunekeeper.daemon.service import Service  # here, so that light commands start fast

    settings = load_settings(args.config)
    require_credentials(settings)
    configure_logging(settings.log.level, settings.log.format, secrets=secrets_in(settings))
    return asyncio.run(Service(settings, config_file=args.config, http_mounts=status_page(settings)).run())


def status_page(settings: Settings) -> list[Mount]:
    """The status page on the daemon's HTTP server, unless web.enabled is off."""
    if not settings.web.enabled:
        return []
    from tunekeeper.web.app import StatusPage

    def mount(app: web.Application) -> None:
        StatusPage.from_settings(settings).mount(app)

    return [mount]
