"""`tunekeeper run`: the daemon in the foreground (as systemd runs it)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import TYPE_CHECKING

from tunekeeper.config import Settings, load_settings, require_credentials, secrets_in
from tunekeeper.logs import configure_logging

if TYPE_CHECKING:
    from aiohttp import web

    from tunekeeper.daemon.http import Mount


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="run the daemon in the foreground")
    parser.set_defaults(func=run)


def secrets_of(settings: Settings) -> list[str]:
    """Values that must never reach a log line: the API key and any database password."""
    return secrets_in(settings)


def run(args: argparse.Namespace) -> int:
    # SIGHUP's default action ends the process. The daemon handles it (a reload) only while its event loop
    # runs: from here, before the heavy imports, until the process exits, a SIGHUP outside that window
    # (systemctl reload during start-up or shutdown) is ignored rather than fatal.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from tunekeeper.daemon.service import Service  # here, so that light commands start fast

    settings = load_settings(args.config)
    require_credentials(settings)
    configure_logging(settings.log.level, settings.log.format, secrets=secrets_of(settings))
    return asyncio.run(Service(settings, config_file=args.config, http_mounts=status_page(settings)).run())


def status_page(settings: Settings) -> list[Mount]:
    """The status page on the daemon's HTTP server, unless web.enabled is off."""
    if not settings.web.enabled:
        return []
    from tunekeeper.web.app import StatusPage

    def mount(app: web.Application) -> None:
        StatusPage.from_settings(settings).mount(app)

    return [mount]
