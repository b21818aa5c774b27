"""throughput: N near-instant jobs through the whole lifecycle (queued -> submitting -> tuning -> succeeded).

SQLite: 1,000 jobs (--quick 200), one daemon. PostgreSQL: 5,000 jobs (--quick 1,000) with one replica and with
three. Each job has one example and tunes one step of 1 ms, so the work measured is the daemon's: claim, create,
record, poll, record. The daemon's limits are raised so that only its own speed bounds the rate
(max_active_jobs 10,000, creates_per_minute 1,000,000, max_concurrent_creates 64, poll.concurrency 64), and the
poll settings say the service is fast (min_step_seconds 0, min_interval 0.1 s), so the first poll comes 0.1 s
after the create; the daemons are started first, then all jobs are inserted in one transaction.

Figures: wall time from the insert's commit to the last `finished_at`; jobs/s; the daemons' CPU seconds per job
(all replicas together, from /proc/<pid>/stat over that window); peak RSS (VmHWM, the largest replica); and the
daemon's jobs/s as a share of the emulator's ceiling, which is the goal (>= 70 %).

The ceiling is measured first, in the same run, with no daemon running (`bench.emulator_rps`, mix `lifecycle`,
median of 3 runs of 2 s, 5 s without --quick): a fresh emulator with `--step-seconds 1ms`, driven by the raw
keep-alive client over 64 connections (the daemon's pool, gemini.max_connections) with exactly the requests the
daemon sends per job (a create with the job's body, then a GET of its operation once done). Create+GET pairs/s
is the jobs/s the emulator can serve; for each run it is scaled by 2 / the API requests per job the daemon
actually made (the emulator's request count / N), so retries or extra reads count against the daemon.
Operation GETs/s / 2 (the `emulator` scenario's figure) was the ceiling before; it overstates it, since a
create (body parsing, validation, a model and an operation made) costs the emulator several GETs' worth of CPU.
It stays in the notes, with the emulator's CPU per job under the lifecycle load and how busy the emulator was
(on a shared machine it may lack a core).

Beside it, the same pairs through a bare aiohttp client (the library the daemon uses, its session set up as
the daemon's: a pool of gemini.max_connections = 64, 64 pairs in flight as max_concurrent_creates): no
database, no daemon. Its jobs/s and CPU per job are the floor cost of the HTTP part alone, to set against the
daemon's CPU per job.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from bench import emulator_rps
from bench.context import Context
from bench.harness import (
    EPOCHS,
    BenchError,
    DaemonProcess,
    EmulatorProcess,
    daemon_environment,
    database,
    empty_config,
    epoch,
    proc_sample,
    training_examples,
    wait_for,
)
from bench.report import Figure, at_least
from tunekeeper.config import GeminiSettings
from tunekeeper.naming import tuned_model_id

NAME = "throughput"
MB = 1024 * 1024
MAX_CONCURRENT_CREATES = 64
# The daemon's HTTP connection pool: gemini.max_connections, left at its default in these runs.
DAEMON_MAX_CONNECTIONS: int = GeminiSettings.model_fields["max_connections"].default
SETTINGS = {
    "GEMINI__MAX_ACTIVE_JOBS": "10000",
    "GEMINI__CREATES_PER_MINUTE": "1000000",
    "GEMINI__REQUESTS_PER_MINUTE": "100000000",
    "GEMINI__MAX_CONCURRENT_CREATES": str(MAX_CONCURRENT_CREATES),
    "POLL__CONCURRENCY": "64",
    # The jobs are done 1 ms after their create: a sped-up service, for which min_step_seconds is 0 (see config)
    # and the first poll may come early.
    "POLL__MIN_STEP_SECONDS": "0",
    "POLL__MIN_INTERVAL": "0.1",
}
REQUESTS_PER_PAIR = 2.0  # the lifecycle mix: one create, one GET


def job_name(index: int) -> str:
    return f"job {index}"


@dataclass(frozen=True)
class Reference:
    """What the emulator serves, and what a bare aiohttp client reaches, for this scenario's jobs."""

    pairs_per_second: float  # create+GET pairs/s, raw client: the ceiling before scaling by requests per job
    gets_per_second: float  # operation GETs/s (the emulator scenario's figure): the old ceiling, for the notes
    bare_per_second: float  # create+GET pairs/s through aiohttp.ClientSession
    bare_cpu_ms: float  # that client's CPU per pair


def _check_lifecycle_mix() -> None:
    """The lifecycle mix must send what the daemon sends for these jobs: fail loudly if either side drifted."""
    request = emulator_rps.lifecycle_request(0)
    expected = (
        [{"text_input": example.text_input, "output": example.output} for example in request.examples],
        request.epoch_count,
        request.batch_size,
        request.display_name,
        request.tuned_model_id,
        request.base_model,
    )
    actual = (
        training_examples(1),
        EPOCHS,
        EPOCHS,
        job_name(0),
        tuned_model_id(job_name(0), 1),
        GeminiSettings.model_fields["default_base_model"].default,
    )
    if expected != actual:
        raise BenchError(f"emulator_rps.lifecycle_request no longer matches these jobs: {expected} != {actual}")


async def get_rate(ctx: Context) -> float:
    """Operation GETs/s the emulator serves: the emulator scenario's median, or measured here (median of 3)."""
    rate = ctx.shared_median("emulator_rps")
    if rate is None:
        result = await emulator_rps.measure(2.0 if ctx.quick else 5.0, runs=3)
        rate = result["requests_per_second"]
        ctx.share("emulator_rps", rate)
        ctx.note(NAME, f"emulator GETs/s measured here: {rate:,.0f}")
    return rate


async def measure_reference(ctx: Context) -> tuple[Reference, list[Figure]]:
    """The ceiling and the bare-client reference, measured before any daemon runs so that nothing competes."""
    _check_lifecycle_mix()
    duration = 2.0 if ctx.quick else 5.0
    gets = await get_rate(ctx)
    # As many connections as the daemon may use: the emulator then handles more requests per event-loop turn and
    # spends less CPU per job (in 4 paired rounds 64 served 0-18 % more jobs/s than 32).
    ceiling = await emulator_rps.measure(duration, runs=3, mix="lifecycle", connections=DAEMON_MAX_CONNECTIONS)
    bare = await emulator_rps.measure(
        duration,
        runs=3,
        mix="lifecycle",
        client="aiohttp",
        connections=MAX_CONCURRENT_CREATES,
        connection_limit=DAEMON_MAX_CONNECTIONS,
    )
    reference = Reference(ceiling["per_second"], gets, bare["per_second"], bare["client_cpu_ms"])
    # On a shared machine the emulator may not get a whole core: say how busy it was, so readers can tell.
    busy = ceiling["per_second"] * ceiling["emulator_cpu_ms"] / 1000
    ctx.note(
        NAME,
        f"emulator ceiling (create+GET): raw keep-alive client, {DAEMON_MAX_CONNECTIONS} connections, median of "
        f"3 x {duration:g} s "
        f"({ceiling['min_per_second']:,.0f}-{ceiling['max_per_second']:,.0f} pairs/s); emulator CPU "
        f"{ceiling['emulator_cpu_ms']:.3f} ms/job (it was busy {busy:.0%} of a core; a core of its own would "
        f"serve about {1000 / ceiling['emulator_cpu_ms']:,.0f} jobs/s), client {ceiling['client_cpu_ms']:.3f} ms/job; "
        f"{ceiling['not_done']:.0f} GETs came before done. The GETs/s-based ceiling would be {gets:,.0f} / 2 = "
        f"{gets / REQUESTS_PER_PAIR:,.0f} jobs/s, {gets / REQUESTS_PER_PAIR / reference.pairs_per_second:.1f}x this",
    )
    ctx.note(
        NAME,
        f"bare aiohttp client: one ClientSession (pool {DAEMON_MAX_CONNECTIONS}), {MAX_CONCURRENT_CREATES} pairs "
        f"in flight, median of 3 x {duration:g} s ({bare['min_per_second']:,.0f}-{bare['max_per_second']:,.0f} "
        f"jobs/s); its CPU {bare['client_cpu_ms']:.3f} ms/job, the emulator's {bare['emulator_cpu_ms']:.3f} ms/job",
    )
    if reference.bare_per_second > reference.pairs_per_second:
        # Both are bound by the emulator's one core, so they come close; on a shared machine the two measurements
        # do not see the same neighbours, and the emulator tends to spend a little less CPU per job under aiohttp.
        excess = reference.bare_per_second / reference.pairs_per_second - 1
        ctx.note(
            NAME,
            f"the bare aiohttp client beat the ceiling ({reference.bare_per_second:,.0f} vs "
            f"{reference.pairs_per_second:,.0f} jobs/s, +{excess:.0%}): the ceiling is that uncertain in this run",
        )
    figures = [
        Figure(NAME, "emulator ceiling (create+GET)", reference.pairs_per_second, "jobs/s"),
        Figure(NAME, "bare aiohttp client: jobs/s", reference.bare_per_second, "jobs/s"),
        Figure(NAME, "bare aiohttp client: CPU/job", reference.bare_cpu_ms, "ms"),
    ]
    return reference, figures


async def one_run(ctx: Context, reference: Reference, kind: str, replicas: int, jobs: int, label: str) -> list[Figure]:
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
        inserted = await db.insert_jobs([(job_name(i), 1) for i in range(jobs)])

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
    cpu_ms = sum(a.cpu_seconds - b.cpu_seconds for a, b in zip(after, before, strict=True)) / jobs * 1000
    emulator_cpu_ms = (emu_after.cpu_seconds - emu_before.cpu_seconds) / jobs * 1000
    requests = stats["requests"]["total"] / jobs
    ceiling = reference.pairs_per_second * REQUESTS_PER_PAIR / requests
    ctx.note(
        NAME,
        f"{label}: {requests:.2f} API requests/job {dict(stats['requests']['by_route'])}; emulator ceiling "
        f"{ceiling:,.0f} jobs/s (GETs/s-based: {reference.gets_per_second / requests:,.0f}); daemon CPU "
        f"{cpu_ms:.2f} ms/job over {wall:.1f} s wall (the bare aiohttp client's {reference.bare_cpu_ms:.2f} ms is "
        f"{reference.bare_cpu_ms / cpu_ms:.0%} of it); emulator CPU {emulator_cpu_ms:.3f} ms/job",
    )
    return [
        Figure(NAME, f"{label}: wall time", wall, "s"),
        Figure(NAME, f"{label}: jobs/s", rate, "jobs/s"),
        Figure(NAME, f"{label}: CPU/job", cpu_ms, "ms"),
        Figure(NAME, f"{label}: peak RSS", max(a.peak_rss_bytes for a in after) / MB, "MB"),
        at_least(NAME, f"{label}: share of emulator ceiling", rate / ceiling * 100, 70, "%"),
    ]


async def run(ctx: Context) -> list[Figure]:
    reference, figures = await measure_reference(ctx)
    figures += await one_run(ctx, reference, "sqlite", 1, 200 if ctx.quick else 1000, "SQLite")
    if ctx.postgres_url is None:
        ctx.note(NAME, f"PostgreSQL runs skipped: {ctx.postgres_note}")
        return figures
    jobs = 1000 if ctx.quick else 5000
    for replicas in (1, 3):
        figures += await one_run(ctx, reference, "postgres", replicas, jobs, f"PG x{replicas}")
    return figures
