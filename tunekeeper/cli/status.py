"""`tunekeeper status`: is a daemon running on this database, since when, who holds leases, is it ready.

Two sources, each told apart in the output: the daemon's own health endpoint (`[http]` in the configuration;
it says who answers, since when, and whether it is ready) and the database (its schema, the replicas holding
leases now, the jobs by state). On PostgreSQL the endpoint is this host's daemon; the leases show every replica.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import sqlalchemy as sa

from tunekeeper.cli import render
from tunekeeper.cli.usage import add_command
from tunekeeper.config import HttpSettings, Settings, load_settings
from tunekeeper.db.engine import make_engine, missing_sqlite_file
from tunekeeper.db.migrate import HEAD_REVISION, current_revision
from tunekeeper.db.store import JobStore
from tunekeeper.secrecy import display_url

EXIT_RUNNING = 0
EXIT_NOT_READY = 1  # a daemon answers but is not ready, or the database cannot be read
EXIT_NOT_RUNNING = 3  # as LSB's "program is not running" (systemctl status says the same)
HEALTH_TIMEOUT = 3.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "status",
        summary="is a daemon running on this database, since when, who holds leases, is it ready",
        description="Ask the daemon's health endpoint (http.host:http.port) who is running, since when and whether\n"
        "it is ready, and the database which replicas hold leases now and how many jobs are in each state.",
        exits={
            0: "a daemon answers and is ready",
            EXIT_NOT_READY: "a daemon answers but is not ready, or the database cannot be read",
            EXIT_NOT_RUNNING: "no daemon answers on the health endpoint (not running, or [http] is off)",
        },
    )
    parser.add_argument("--json", action="store_true", help="one JSON object: daemon, database, leases, jobs")
    parser.set_defaults(func=status_command)


@dataclass
class Report:
    daemon: dict[str, Any] | None = None  # what /healthz said, with "ready" and the readiness checks
    daemon_problem: str | None = None  # why no daemon answered
    database: str = ""
    schema: str | None = None
    database_problem: str | None = None
    leases: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, int] = field(default_factory=dict)

    @property
    def exit_status(self) -> int:
        if self.daemon is None:
            return EXIT_NOT_RUNNING
        return EXIT_RUNNING if self.daemon.get("ready") and self.database_problem is None else EXIT_NOT_READY


def status_command(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)  # a ConfigError goes up to main: exit 78
    report = asyncio.run(_gather(settings))
    if args.json:
        print(render.dumps(asdict(report) | {"exit_status": report.exit_status}))
    else:
        print(_text(report, datetime.now(UTC)))
    return report.exit_status


async def _gather(settings: Settings) -> Report:
    report = Report(database=display_url(settings.database.url))
    (report.daemon, report.daemon_problem), _ = await asyncio.gather(
        _ask_daemon(settings.http), _ask_database(settings, report)
    )
    return report


async def _ask_daemon(http: HttpSettings) -> tuple[dict[str, Any] | None, str | None]:
    if not http.enabled:
        return None, "the health endpoint is off ([http] enabled = false)"
    host = f"[{http.host}]" if ":" in http.host else http.host
    base = f"http://{host}:{http.port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT)) as session:
            async with session.get(f"{base}/healthz") as response:
                if response.status != 200:
                    return None, f"{base}/healthz answered {response.status}"
                health = await response.json()
            async with session.get(f"{base}/readyz") as response:
                readiness = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
        return None, f"no daemon answers at {base} ({type(exc).__name__})"
    if not isinstance(health, dict) or not isinstance(readiness, dict):
        return None, f"{base} does not answer as tunekeeper does"
    return health | {"url": base, "ready": readiness.get("status") == "ready", "checks": readiness.get("checks")}, None


async def _ask_database(settings: Settings, report: Report) -> None:
    missing = missing_sqlite_file(settings.database.url)
    if missing is not None:
        report.database_problem = f"no database at {missing}"
        return
    engine = make_engine(settings.database.url, settings.database.pool_size)
    try:
        report.schema = await current_revision(engine)
        if report.schema != HEAD_REVISION:
            report.database_problem = f"schema at {report.schema}, this code needs {HEAD_REVISION}"
            return
        store = JobStore(engine)
        report.leases = [asdict(holder) for holder in await store.lease_holders()]
        report.jobs = {state.value: count for state, count in (await store.count_by_state()).items()}
    except (sa.exc.DBAPIError, OSError) as exc:
        report.database_problem = f"cannot read the database: {type(exc).__name__}"
    finally:
        await engine.dispose()


def _text(report: Report, now: datetime) -> str:
    lines = []
    daemon = report.daemon
    if daemon is None:
        lines.append(f"daemon     not running: {report.daemon_problem}")
    else:
        started = daemon.get("started_at")
        since = ""
        if isinstance(started, str):
            moment = datetime.fromisoformat(started)
            since = f" since {moment:%Y-%m-%d %H:%M:%S} UTC ({render.age(moment, now) + ' ago'})"
        ready = (
            "ready"
            if daemon["ready"]
            else "NOT READY: " + ", ".join(name for name, ok in (daemon.get("checks") or {}).items() if not ok)
        )
        lines.append(
            f"daemon     running{since}, {ready}; owner {daemon.get('owner')}, pid {daemon.get('pid')}, "
            f"version {daemon.get('version')}, backend {daemon.get('backend')} [{daemon['url']}]"
        )
    lines.append(f"database   {report.database}" + (f": {report.database_problem}" if report.database_problem else ""))
    if report.database_problem is None:
        lines.append(f"schema     {report.schema} (current)")
        if report.leases:
            for holder in report.leases:
                named = f", leases {', '.join(holder['leases'])}" if holder["leases"] else ""
                lines.append(f"leases     {holder['owner']}: {holder['jobs']} jobs in hand{named}")
        else:
            lines.append("leases     none held now")
        shown = ", ".join(f"{state} {count}" for state, count in report.jobs.items()) or "none"
        lines.append(f"jobs       {shown}")
    return "\n".join(render.clean(line) for line in lines)
