"""`tunekeeper jobs` and `show`: the jobs, newest first (once, or redrawn until Ctrl-C), and one job whole."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from datetime import UTC, datetime

from tunekeeper.cli import render
from tunekeeper.cli.database import EXIT_INVALID, fail, with_store
from tunekeeper.cli.selection import add_filter_arguments, interval, job_filter, positive
from tunekeeper.cli.usage import JOB_ID, add_command
from tunekeeper.db.store import JobStore


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    jobs = add_command(
        subparsers,
        "jobs",
        summary="list jobs, newest first",
        description="List jobs, newest first: id, name, (backend,) state, progress, model, age. Filters combine.",
        exits={1: "the database cannot be reached or is at the wrong schema revision"},
        notes="With --watch, Ctrl-C ends the watch with status 0.",
    )
    add_filter_arguments(jobs, "only")
    jobs.add_argument("--limit", type=positive, default=50, metavar="N", help="at most N jobs (default 50)")
    jobs.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    jobs.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=interval,
        metavar="SECONDS",
        help="redraw the table in place every SECONDS (default 2) until Ctrl-C",
    )
    jobs.set_defaults(func=jobs_command)

    show = add_command(
        subparsers,
        "show",
        summary="one job: request, state, results, loss curve and timeline",
        description="One job: its request, state and progress, the tuned model, evaluation results, the loss\n"
        "curve and the timeline of its events (UTC).",
        notes=JOB_ID,
        exits={1: "no such job, or the database cannot be reached"},
    )
    show.add_argument("job_id", type=int, metavar="ID", help="the job's id")
    show.add_argument("--json", action="store_true", help="one JSON object: the job's fields and its events")
    show.set_defaults(func=show_command)


def jobs_command(args: argparse.Namespace) -> int:
    where = job_filter(args)

    async def listing(store: JobStore) -> int:
        found = await store.list_jobs(where, limit=args.limit, columns=render.SUMMARY_FIELDS)
        if args.json:
            print(render.dumps([render.job_summary_json(job) for job in found]))
        else:
            width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
            print(render.jobs_table(found, datetime.now(UTC), width=width))
        return 0

    async def watching(store: JobStore) -> int:
        while True:
            found = await store.list_jobs(where, limit=args.limit, columns=render.SUMMARY_FIELDS)
            now = datetime.now(UTC)
            interactive = sys.stdout.isatty()
            width = shutil.get_terminal_size().columns if interactive else None
            frame = render.jobs_table(found, now, width=width)
            header = f"every {args.watch:g}s: tunekeeper jobs    {now:%Y-%m-%d %H:%M:%S} UTC"
            # Home and clear on a terminal, as watch(1) does; a pipe gets one frame after another.
            print(("\x1b[H\x1b[2J" if interactive else "") + header + "\n\n" + frame, flush=True)
            await asyncio.sleep(args.watch)

    if args.watch is None:
        return with_store(args, listing)
    if args.json:
        return fail("--watch draws a table; --json prints once", EXIT_INVALID)
    try:
        return with_store(args, watching)
    except KeyboardInterrupt:  # Ctrl-C is how a watch ends
        return 0


def show_command(args: argparse.Namespace) -> int:
    async def show(store: JobStore) -> int:
        job = await store.get_job(args.job_id)
        if job is None:
            return fail(f"no job {args.job_id}")
        events = await store.events(job.id)
        if args.json:
            print(render.dumps(render.job_json(job) | {"events": [render.event_json(e) for e in events]}))
        else:
            print(render.job_details(job, events, datetime.now(UTC)))
        return 0

    return with_store(args, show)
