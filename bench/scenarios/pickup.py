"""pickup: from a producer's committed INSERT to the create request arriving at the emulator.

200 jobs (--quick 50) are inserted one at a time, each in its own transaction, at random intervals of 20-100 ms
(seeded). The insert time is time.time() right after the commit returned; the arrival time is the emulator's
`created_at` for the job's model (time.time() in the emulator process as it handled the create). Both clocks
are this machine's. The jobs tune for a few milliseconds, so the quota never holds one back.

Three runs, all with the daemon's default timings (reported beside the figures): SQLite (the daemon notices a
producer's commit by its change watch: on Linux, inotify on the write-ahead log, then a look for the commit at
growing gaps; after a commit is seen, the next look waits `database.watch_interval`, so that a stream of writes,
the daemon's own included, costs one look per interval), PostgreSQL with LISTEN/NOTIFY (the default), and
PostgreSQL with `database.listen = false` (polling only: every `daemon.idle_interval`).
"""

from __future__ import annotations

import asyncio
import random

from bench.context import Context
from bench.harness import (
    DaemonProcess,
    EmulatorProcess,
    daemon_environment,
    database,
    empty_config,
    percentile,
    wait_for,
)
from bench.report import Figure, at_most
from tunekeeper.config import DaemonSettings, DatabaseSettings

NAME = "pickup"
GAP_MS = (20, 100)


async def measure(ctx: Context, kind: str, listen: bool, jobs: int, directory_name: str) -> list[float]:
    """Pickup delays in milliseconds, one per job."""
    directory = ctx.directory(f"{NAME}/{directory_name}")
    rng = random.Random(f"{ctx.seed}:pickup")
    settings = {
        "GEMINI__MAX_ACTIVE_JOBS": "1000",
        "GEMINI__CREATES_PER_MINUTE": "60000",
        "GEMINI__REQUESTS_PER_MINUTE": "6000000",
    }
    if not listen:
        settings["DATABASE__LISTEN"] = "false"
    async with (
        EmulatorProcess("--step-seconds", "1ms") as emu,
        database(kind, directory, ctx.postgres_url) as db,
        DaemonProcess(directory, daemon_environment(db.url, emu.url, empty_config(directory), **settings)) as daemon,
    ):
        await asyncio.sleep(2.0)  # past start-up: the first claims, the listener's connection
        inserted: dict[int, float] = {}
        for i in range(jobs):
            await asyncio.sleep(rng.uniform(*GAP_MS) / 1000)
            job_id, at = await db.insert_job(f"pickup {i}", 1)
            inserted[job_id] = at

        async def all_created() -> bool:
            daemon.check_running()
            rows = await db.fetch("SELECT count(*) FROM tuning_jobs WHERE submitted_at IS NOT NULL")
            return int(rows[0][0]) == jobs

        await wait_for(all_created, within=60, what=f"{jobs} creates ({directory_name})")
        models = (await emu.stats())["models"]
        rows = await db.fetch("SELECT id, tuned_model_id FROM tuning_jobs")
    return [(models[model_id]["created_at"] - inserted[job_id]) * 1000 for job_id, model_id in rows]


async def run(ctx: Context) -> list[Figure]:
    jobs = 50 if ctx.quick else 200
    figures: list[Figure] = []
    runs = [("sqlite", True, "SQLite"), ("postgres", True, "PG NOTIFY"), ("postgres", False, "PG polling")]
    for kind, listen, label in runs:
        if kind == "postgres" and ctx.postgres_url is None:
            ctx.note(NAME, f"{label}: skipped, {ctx.postgres_note}")
            continue
        delays = await measure(ctx, kind, listen, jobs, label.replace(" ", "-").lower())
        p50 = percentile(delays, 0.5)
        if label == "PG NOTIFY":
            figures.append(at_most(NAME, f"{label}: p50", p50, 20, "ms"))
        else:
            figures.append(Figure(NAME, f"{label}: p50", p50, "ms"))
        figures.append(Figure(NAME, f"{label}: p99", percentile(delays, 0.99), "ms"))
    idle = DaemonSettings.model_fields["idle_interval"].default
    figures.append(Figure(NAME, "daemon.idle_interval (default)", idle, "s"))
    waking = f"PG polling wakes every daemon.idle_interval ({idle:g} s) or when the daemon itself frees a slot"
    watch = DatabaseSettings.model_fields.get("watch_interval")
    if watch is not None:
        figures.append(Figure(NAME, "database.watch_interval (default)", watch.default, "s"))
        waking += (
            "; SQLite's change watch follows the log's writes (inotify) and, after a commit it saw, looks again"
            f" after database.watch_interval ({watch.default:g} s)"
        )
    else:
        waking += "; so does SQLite"
    ctx.note(NAME, f"{jobs} jobs per run, one INSERT each, {GAP_MS[0]}-{GAP_MS[1]} ms apart; {waking}")
    return figures
