"""`tunekeeper cancel` and `retry`: on one job, several by id, or those a filter selects (asking first)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tunekeeper.cli import render
from tunekeeper.cli.database import EXIT_FAILED, fail, with_store
from tunekeeper.cli.selection import add_filter_arguments, job_filter
from tunekeeper.cli.usage import JOB_ID, add_command
from tunekeeper.db.records import UnreadableRow
from tunekeeper.db.store import CancelOutcome, JobFilter, JobStore
from tunekeeper.states import RETRYABLE, State


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cancel = add_command(
        subparsers,
        "cancel",
        summary="ask the daemon to cancel jobs: by id, or by state and label",
        description="Ask the daemon to cancel jobs (it sets cancel_requested; the daemon cancels the work on the\n"
        "service). Several jobs: give their ids, or select them with --state, --label and --since; it asks\n"
        "before acting on more than one unless --yes.",
        notes=JOB_ID,
        exits={1: "a job is missing or already finished, nothing was done (no --yes), or a database problem"},
    )
    _add_selection_arguments(cancel, "cancel")
    cancel.set_defaults(func=cancel_command)

    retry = add_command(
        subparsers,
        "retry",
        summary="queue a copy of failed, invalid or cancelled jobs: by id, or by state and label",
        description="Queue a copy of each job (same request, a new id and so a new model id). One job: prints\n"
        "the new id; several: one line (or JSON object) per job, asking first unless --yes.",
        notes=JOB_ID,
        exits={1: "a job is missing or cannot be retried, nothing was done (no --yes), or a database problem"},
    )
    _add_selection_arguments(retry, "retry")
    retry.set_defaults(func=retry_command)


def _add_selection_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("job_ids", type=int, nargs="*", metavar="ID", help=f"the jobs to {verb} (their ids)")
    add_filter_arguments(parser, verb)
    parser.add_argument("--yes", action="store_true", help="do not ask before acting on more than one job")
    parser.add_argument("--json", action="store_true", help="a JSON list: one object per job")


async def _select(args: argparse.Namespace, verb: str, store: JobStore) -> list[int] | None:
    """The ids a bulk command acts on: those given, else those the filter selects; None when refused."""
    where = job_filter(args)
    if args.job_ids and where != JobFilter():
        fail(f"{verb}: give ids or a filter (--state, --label, --since), not both")
        return None
    if not args.job_ids and where == JobFilter():
        fail(f"{verb}: which jobs? give their ids, or select them with --state, --label or --since")
        return None
    chosen = list(dict.fromkeys(args.job_ids)) if args.job_ids else await store.job_ids(where)
    if not chosen:
        print(f"{verb}: no job matches", file=sys.stderr)
    if len(chosen) > 1 and not args.yes and not _confirmed(f"{verb} {len(chosen)} jobs ({_ids(chosen)})?"):
        fail(f"{verb}: nothing done ({len(chosen)} jobs selected; --yes acts without asking)")
        return None
    return chosen


def _ids(ids: list[int], shown: int = 10) -> str:
    listed = ", ".join(str(job_id) for job_id in ids[:shown])
    return listed + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


def _confirmed(question: str) -> bool:
    """Ask on the terminal; without one (a script), the answer is no: scripts say --yes."""
    if not sys.stdin.isatty():
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}
    except EOFError:
        return False


def _report(args: argparse.Namespace, results: list[dict[str, Any]]) -> int:
    """Print each job's outcome (a line, or one JSON list); exit 1 if any job could not be acted on."""
    failed = [result for result in results if not result["ok"]]
    if args.json:
        print(render.dumps(results))
    else:
        for result in results:
            print(result["message"], file=sys.stdout if result["ok"] else sys.stderr)
    return EXIT_FAILED if failed else 0


def cancel_command(args: argparse.Namespace) -> int:
    async def cancel(store: JobStore) -> int:
        chosen = await _select(args, "cancel", store)
        if chosen is None:
            return EXIT_FAILED
        results = [await _cancel_one(store, job_id) for job_id in chosen]
        return _report(args, results)

    return with_store(args, cancel)


async def _cancel_one(store: JobStore, job_id: int) -> dict[str, Any]:
    outcome, state = await store.request_cancel(job_id)
    result: dict[str, Any] = {"id": job_id, "outcome": outcome.value, "state": state.value if state else None}
    if outcome == CancelOutcome.NOT_FOUND:
        return result | {"ok": False, "message": f"no job {job_id}"}
    assert state is not None
    if outcome == CancelOutcome.REQUESTED:
        message = f"cancel requested for job {job_id} ({state.value}); the daemon will cancel it"
    elif outcome == CancelOutcome.ALREADY_REQUESTED:
        message = f"cancel already requested for job {job_id} ({state.value})"
    elif state == State.CANCELLING:
        message = f"job {job_id} is already being cancelled"
    else:
        return result | {"ok": False, "message": f"job {job_id} is {state.value}; finished jobs cannot be cancelled"}
    return result | {"ok": True, "message": message}


def retry_command(args: argparse.Namespace) -> int:
    async def retry(store: JobStore) -> int:
        chosen = await _select(args, "retry", store)
        if chosen is None:
            return EXIT_FAILED
        results = [await _retry_one(store, job_id) for job_id in chosen]
        if not args.json and len(results) == 1 and results[0]["ok"]:
            print(results[0]["retried_as"])  # one job: the new id alone, as scripts have always read it
            return 0
        return _report(args, results)

    return with_store(args, retry)


async def _retry_one(store: JobStore, job_id: int) -> dict[str, Any]:
    job = await store.get_job(job_id)
    if job is None:
        return {"id": job_id, "ok": False, "retried_as": None, "message": f"no job {job_id}"}
    if job.state not in RETRYABLE:
        message = f"job {job_id} is {job.state.value}; only failed, invalid or cancelled jobs can be retried"
        return {"id": job_id, "ok": False, "retried_as": None, "message": message}
    try:
        new_id = await store.copy_job(job_id)
    except UnreadableRow as exc:
        message = f"job {job_id} cannot be retried: its column {exc.column} cannot be read; fix the row first"
        return {"id": job_id, "ok": False, "retried_as": None, "message": message}
    if new_id is None:
        return {"id": job_id, "ok": False, "retried_as": None, "message": f"no job {job_id}"}
    return {"id": job_id, "ok": True, "retried_as": new_id, "message": f"job {job_id} queued again as job {new_id}"}
