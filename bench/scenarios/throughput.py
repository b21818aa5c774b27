"""throughput: N near-instant jobs through the whole lifecycle (queued -> submitting -> tuning -> succeeded).

SQLite: 1,000 jobs (--quick 200), one daemon. PostgreSQL: 5,000 jobs (--quick 1,000) with one replica and with
three. Each job has one example and tunes one step of 1 ms, so the work measured is the daemon's: claim, create,
record, poll, record. The daemon's limits are raised so that only its own speed bounds the rate
(max_active_jobs 10,000, creates_per_minute 1,000,000, max_concurrent_creates 64, poll.concurrency 64), and the
poll settings say the service is fast (min_step_seconds 0, min_interval 0.1 s), so the first poll comes 0.1 s
after the create; the daemons are started first, then all jobs are inserted in one transaction.

Figures: wall time from the insert's commit to the last `finished_at`; jobs/s; the daemons' CPU seconds per job
(all replicas together, from /proc/<pid>/stat over that window); peak RSS (VmHWM, the largest replica); and
the emulator's ceiling for this work: the operation GETs/s it serves (the `emulator` scenario's figure, or
measured here) divided by the API requests per job the daemon actually made (the emulator's request count / N).
The daemon's jobs/s as a share of that ceiling is the goal (>= 70 %).
"""

from __future__ import annotations

import asyncio
import contextlib

from bench import emulator_rps
from bench.context import Context
from bench.harness import (
    BenchError,
    DaemonProcess,
    EmulatorProcess,
    daemon_environment,
    database,
    empty_config,
    epoch,
    proc_sample,
    wait_for,
)
from bench.report import Figure, at_least

NAME = "throughput"
MB = 1024 * 1024
SETTINGS = {
    "GEMINI__MAX_ACTIVE_JOBS": "10000",
    "GEMINI__CREATES_PER_MINUTE": "1000000",
    "GEMINI__MAX_CONCURRENT_CREATES": "64",
    "POLL__CONCURRENCY": "64",
    # The jobs are done 1 ms after their create: a sped-up service, for which min_step_seconds is 0 (see config)
    # and the first poll may come early.
    "POLL__MIN_STEP_SECONDS": "0",
    "POLL__MIN_INTERVAL": "0.1",
}


async def emulator_rate(ctx: Context) -> float:
    """Operation GETs/s the emulator serves: the emulator scenario's median, or measured here (median of 3)."""
    rate = ctx.shared_median("emulator_rps")
    if rate is None:
        result = await emulator_rps.measure(2.0 if ctx.quick else 5.0, runs=3)
        rate = result["requests_per_second"]
        ctx.share("emulator_rps", rate)
        ctx.note(NAME, f"emulator GETs/s measured here: {rate:,.0f}")
    return rate


async def one_run(ctx: Context, kind: str, replicas: int, jobs: int, label: str) -> list[Figure]:
    directory = ctx.directory(f"{NAME}/{label.replace(' ', '-')}")
    async with contextlib.AsyncExitStack() as stack:
        emu = await stack.enter_async_context(EmulatorProcess("--step-seconds", "1ms"))
        db = await stack.enter_async_context(database(kind, directory, ctx.postgres_url))
        env = daemon_environment(db.url, emu.url, empty_config(directory), **SETTINGS)
        daemons = [
            await stack.enter_async_context(DaemonProcess(directory, env, name=f"daemon-{r}")) for r in range(replicas)
        ]
        await asyncio.sleep(1.0)
        before, emu_before = [d.sample() for d in daemons], proc_sample(emu.pid)
        inserted = await db.insert_jobs([(f"job {i}", 1) for i in range(jobs)])

        async def all_done() -> bool:
            for d in daemons:
                d.check_running()
            return await db.count("succeeded") == jobs

        await wait_for(all_done, within=max(120.0, jobs / 10), what=f"{jobs} jobs to succeed ({label})", interval=0.25)
        after, emu_after = [d.sample() for d in daemons], proc_sample(emu.pid)
        last = epoch((await db.fetch("SELECT max(finished_at) FROM tuning_jobs"))[0][0])
        stats = await emu.stats()
    if last is None:
        raise BenchError(f"{label}: no finished_at")
    wall = last - inserted
    rate = jobs / wall
    cpu = sum(a.cpu_seconds - b.cpu_seconds for a, b in zip(after, before, strict=True))
    requests = stats["requests"]["total"] / jobs
    ceiling = await emulator_rate(ctx) / requests
    ctx.note(
        NAME,
        f"{label}: {requests:.2f} API requests/job {dict(stats['requests']['by_route'])}; "
        f"emulator ceiling {ceiling:,.0f} jobs/s; daemon CPU {cpu:.1f} s over {wall:.1f} s wall, emulator CPU "
        f"{emu_after.cpu_seconds - emu_before.cpu_seconds:.1f} s",
    )
    return [
        Figure(NAME, f"{label}: wall time", wall, "s"),
        Figure(NAME, f"{label}: jobs/s", rate, "jobs/s"),
        Figure(NAME, f"{label}: CPU/job", cpu / jobs * 1000, "ms"),
        Figure(NAME, f"{label}: peak RSS", max(a.peak_rss_bytes for a in after) / MB, "MB"),
        at_least(NAME, f"{label}: share of emulator ceiling", rate / ceiling * 100, 70, "%"),
    ]


async def run(ctx: Context) -> list[Figure]:
    figures = await one_run(ctx, "sqlite", 1, 200 if ctx.quick else 1000, "SQLite")
    if ctx.postgres_url is None:
        ctx.note(NAME, f"PostgreSQL runs skipped: {ctx.postgres_note}")
        return figures
    jobs = 1000 if ctx.quick else 5000
    for replicas in (1, 3):
        figures += await one_run(ctx, "postgres", replicas, jobs, f"PG x{replicas}")
    return figures
