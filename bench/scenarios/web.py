"""web: the status page on a big table: server time of its pages, and what open pages cost the database.

1,000,000 jobs and 10,000,000 job_events (--quick: 100,000 and 1,000,000), in SQLite and in PostgreSQL, made
by SQL in the database itself (a recursive CTE, generate_series; queued by an INSERT, then an UPDATE writes the
daemon's columns): jobs finished over 60 days (a little over 2%
failed, invalid or cancelled), labels `team=t0..t19`, names with one of seven words; the newest 100 queued and
8 tuning, one of them with 1,000 recorded losses. Then ANALYZE (PostgreSQL: VACUUM ANALYZE, as autovacuum
would have done).

Server time: the status page runs in this process on its own loopback HTTP server (aiohttp), as the daemon
mounts it, and each request's time is taken by the client around the whole exchange. The shared snapshot is
dropped before each request, so every one reads the database (the worst case; a page open in many tabs is
served from the snapshot), except the finished jobs' counts by state and their 7-day history: those count an
index as big as the table, so the overview reads them at most once a minute, and their time is reported apart.
Per page, REQUESTS requests: the overview; a filtered list (state failed, name
containing "alpha", label team=t3: a search, so through its bounded window); the list of one state (state
cancelled, a keyset page); a finished job's page (10 events); the tuning job's page (1,000 losses, drawn
downsampled). p95 of each, goal 100 ms.

Viewers: 100 live pages polling the overview's live data every 0.25 s for WINDOW_S seconds against one polling
alone, with web.refresh_interval 1 s; the database statements each case ran (StatusViews counts them).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.context import Context
from bench.harness import BenchError, Database, database, percentile
from bench.report import Figure, at_most
from tunekeeper.config import Settings
from tunekeeper.web.app import StatusPage

NAME = "web"
REQUESTS = 40
GOAL_MS = 100.0
VIEWERS = 100
VIEW_INTERVAL_S = 0.25
WINDOW_S = 6.0
SPAN_S = 60 * 86_400  # jobs finished over the last 60 days
QUEUED, TUNING = 100, 8
LOSSES = 1000

_STATE = (
    "CASE WHEN id > {n} - {queued} THEN 'queued' WHEN id > {n} - {active} THEN 'tuning'"
    " WHEN id % 97 = 0 THEN 'failed' WHEN id % 211 = 0 THEN 'invalid' WHEN id % 157 = 0 THEN 'cancelled'"
    " WHEN id % 5 = 0 THEN 'purged' ELSE 'succeeded' END"
)
_WORD = (
    "CASE i % 7 WHEN 0 THEN 'alpha' WHEN 1 THEN 'beta' WHEN 2 THEN 'gamma' WHEN 3 THEN 'delta'"
    " WHEN 4 THEN 'epsilon' WHEN 5 THEN 'zeta' ELSE 'eta' END"
)


def _jobs_sql(kind: str, n: int, start: float) -> tuple[str, str]:
    """The jobs as producers queue them (an INSERT of request columns: migration 0004 refuses any other), then
    the daemon's columns as the daemon would have written them over 60 days (an UPDATE)."""
    step = SPAN_S / n
    json_type = "::jsonb" if kind == "postgres" else ""
    active = f"id > {n} - {QUEUED + TUNING}"

    def at(value: str, offset: str) -> str:
        if kind == "sqlite":
            return f"strftime('%Y-%m-%d %H:%M:%S', {start} + {value} * {step} + {offset}, 'unixepoch') || '.000000'"
        return f"to_timestamp({start} + {value} * {step} + {offset})"

    if kind == "sqlite":
        series = f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "
        source = "FROM s"
    else:
        series = ""
        source = f"FROM generate_series(1, {n}) AS i"
    insert = (
        f"{series}INSERT INTO tuning_jobs (display_name, training_data, epoch_count, labels, created_at) SELECT"
        f" 'job ' || i || ' ' || {_WORD},"
        """ '[{"text_input": "1", "output": "2"}, {"text_input": "3", "output": "4"}]'"""
        f"{json_type}, 3,"
        """ ('{"team": "t' || (i % 20) || '"}')"""
        f"{json_type}, {at('i', '0')} {source}"
    )
    update = (
        f"UPDATE tuning_jobs SET state = {_STATE.format(n=n, queued=QUEUED, active=QUEUED + TUNING)},"
        " last_error = CASE WHEN id % 97 = 0 THEN 'INVALID_ARGUMENT: example ' || id ELSE NULL END,"
        f" backend = 'gemini', total_steps = 300, completed_steps = CASE WHEN {active} THEN 120 ELSE 300 END,"
        f" progress_percent = CASE WHEN {active} THEN 40.0 ELSE 100.0 END, submitted_at = {at('id', '60')},"
        f" finished_at = CASE WHEN {active} THEN NULL ELSE {at('id', '3600')} END"
        f" WHERE id <= {n - QUEUED}"
    )
    return insert, update


def _events_sql(kind: str, n: int, per_job: int, start: float) -> str:
    count = n * per_job
    step = SPAN_S / count
    if kind == "sqlite":
        at = f"strftime('%Y-%m-%d %H:%M:%S', {start} + i * {step}, 'unixepoch') || '.000000'"
        series = f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {count - 1}) "
        source = "FROM s"
    else:
        at = f"to_timestamp({start} + i * {step})"
        series = ""
        source = f"FROM generate_series(0, {count - 1}) AS i"
    return (
        f"{series}INSERT INTO job_events (job_id, at, kind, from_state, to_state, detail) SELECT"
        f" i / {per_job} + 1, {at}, 'progress', NULL, NULL,"
        """ ('{"epoch": ' || (i % """
        f"{per_job}"
        """) || ', "mean_loss": 0.5}')"""
        f"{'::jsonb' if kind == 'postgres' else ''} {source}"
    )


async def seed(db: Database, n: int, per_job: int) -> tuple[int, int, float]:
    """The jobs and events; (a finished job's id, the tuning job with losses, seconds taken)."""
    started = time.monotonic()
    start = time.time() - SPAN_S - 3600
    for statement in _jobs_sql(db.kind, n, start):
        await db.execute(statement)
    await db.execute(_events_sql(db.kind, n, per_job, start))
    tuning = n - QUEUED - 1
    losses = [{"step": s, "epoch": s // 10, "meanLoss": 2.0 / (1 + s / 100)} for s in range(1, LOSSES + 1)]
    anchor, changed = db.stamp(time.time() - 120), db.stamp(time.time() - 10)
    await db.execute(
        "UPDATE tuning_jobs SET snapshots = ?, anchor_at = ?, anchor_steps = 10, progress_changed_at = ? WHERE id = ?",
        json.dumps(losses),
        anchor,
        changed,
        tuning,
    )
    await db.execute("ANALYZE" if db.kind == "sqlite" else "VACUUM ANALYZE")
    return n // 2 + 1, tuning, time.monotonic() - started


async def timed(session: aiohttp.ClientSession, url: str) -> float:
    began = time.perf_counter()
    async with session.get(url) as response:
        await response.read()
        if response.status != 200:
            raise BenchError(f"{url}: HTTP {response.status}")
    return (time.perf_counter() - began) * 1000


async def viewers(session: aiohttp.ClientSession, url: str, count: int, page: StatusPage) -> int:
    """Statements the database ran while `count` pages polled `url` for WINDOW_S seconds."""
    before = page.views.queries
    deadline = time.monotonic() + WINDOW_S

    async def viewer() -> None:
        while time.monotonic() < deadline:
            async with session.get(url) as response:
                await response.read()
            await asyncio.sleep(VIEW_INTERVAL_S)

    async with asyncio.TaskGroup() as group:
        for _ in range(count):
            group.create_task(viewer())
    return page.views.queries - before


async def measure(db: Database, ctx: Context, finished_job: int, tuning_job: int) -> list[Figure]:
    settings = Settings(database={"url": db.url}, web={"refresh_interval": 1.0})  # type: ignore[arg-type]
    app = web.Application()
    page = StatusPage.from_settings(settings)
    page.mount(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    figures: list[Figure] = []
    scenario = f"{NAME} ({db.kind})"
    try:
        base = str(server.make_url(""))
        pages = {
            "overview": "/",
            "filtered list (search)": "/jobs?state=failed&q=alpha&label=team%3Dt3",
            "one state's list": "/jobs?state=cancelled",
            "job page (10 events)": f"/jobs/{finished_job}",
            f"job page ({LOSSES} losses)": f"/jobs/{tuning_job}",
        }
        connector = aiohttp.TCPConnector(limit=VIEWERS + 10)
        async with aiohttp.ClientSession(connector=connector) as session:
            count = REQUESTS // 2 if ctx.quick else REQUESTS
            for name, path in pages.items():
                await timed(session, base + path)  # warm: the planner's and the pool's first use
                times = []
                for _ in range(count):
                    # Every request reads the database, but for the finished jobs' counts and history, which the
                    # overview reads at most once a minute (measured apart below).
                    page.snapshots.keep_only(("finished",))
                    times.append(await timed(session, base + path))
                figures.append(at_most(scenario, f"{name} p95", percentile(times, 0.95), GOAL_MS, "ms"))
                figures.append(Figure(scenario, f"{name} p50", percentile(times, 0.5), "ms"))
            finished = []
            for _ in range(max(5, count // 4)):
                began = time.perf_counter()
                await page.views.finished_overview(datetime.now(UTC))
                finished.append((time.perf_counter() - began) * 1000)
            figures.append(
                Figure(
                    scenario, "finished jobs' counts and history (once a minute) p95", percentile(finished, 0.95), "ms"
                )
            )
            served = [await timed(session, base + "/") for _ in range(count)]
            figures.append(Figure(scenario, "overview from the shared snapshot p95", percentile(served, 0.95), "ms"))
            one = await viewers(session, base + "/api/overview", 1, page)
            many = await viewers(session, base + "/api/overview", VIEWERS, page)
        figures.append(Figure(scenario, f"statements in {WINDOW_S:g} s, 1 live page", one, ""))
        figures.append(
            # one load more or less is the timing of the window's ends, not the viewers
            at_most(scenario, f"statements, {VIEWERS} live pages / 1 live page", many / max(1, one), 1.2, "x")
        )
    finally:
        await server.close()
        await page.close()
    return figures


async def run(ctx: Context) -> list[Figure]:
    n = 100_000 if ctx.quick else 1_000_000
    per_job = 10
    figures: list[Figure] = []
    kinds = ["sqlite"] + (["postgres"] if ctx.postgres_url else [])
    for kind in kinds:
        async with database(kind, ctx.directory(f"{NAME}-{kind}"), ctx.postgres_url) as db:
            finished_job, tuning_job, seconds = await seed(db, n, per_job)
            ctx.note(NAME, f"{kind}: {n:,} jobs and {n * per_job:,} events made in {seconds:.0f} s")
            figures += await measure(db, ctx, finished_job, tuning_job)
            load = os.getloadavg()[0]
            ctx.note(NAME, f"{kind}: load average {load:.1f} on {os.cpu_count()} cores at the end of its measurements")
    if not ctx.postgres_url:
        ctx.note(NAME, f"no PostgreSQL: {ctx.postgres_note}")
    return figures
