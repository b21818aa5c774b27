"""Commands for people: submit, jobs, show, cancel, retry.

Each opens the configured database, checks that its schema is the one this code needs, does one thing through
the JobStore and disposes of the engine. `submit` checks the job with the daemon's own check (`daemon.intake`,
the configured service's limits) before inserting anything, so a mistake is reported at once instead of as an
`invalid` job later, and stores the checked examples in the row: what was checked is what is tuned.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from tunekeeper import naming
from tunekeeper.backends.port import Example, InvalidRequest, Owner
from tunekeeper.cli import render
from tunekeeper.config import Settings, load_settings
from tunekeeper.daemon.intake import backend_rules, check_job
from tunekeeper.datasets import DatasetError, examples_json, load_examples, open_own_file
from tunekeeper.db.engine import make_engine, missing_sqlite_file
from tunekeeper.db.migrate import SchemaMismatch, check_schema
from tunekeeper.db.records import NewJob, UnreadableRow
from tunekeeper.db.store import CancelOutcome, JobFilter, JobStore
from tunekeeper.states import RETRYABLE, State

EXIT_FAILED = 1
EXIT_INVALID = 2  # as for argparse's usage errors: the request itself is wrong
SUBMIT_DEPLOYMENT = "0" * 32  # the owner's mark plays no part in a check; the row gets its own when claimed

StoreAction = Callable[[JobStore], Awaitable[int]]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = subparsers.add_parser(
        "submit",
        help="validate a training file and queue a tuning job",
        description="Validate a training file with the daemon's rules, then queue a job for it. "
        "Prints the new job's id.",
    )
    submit.add_argument(
        "file", metavar="FILE", help="training data: .jsonl (text_input/output objects, or Vertex AI contents) or .csv"
    )
    submit.add_argument("--display-name", required=True, metavar="NAME", help="the tuned model's display name")
    submit.add_argument("--base-model", metavar="MODEL", help="e.g. models/gemini-1.5-flash-001-tuning")
    submit.add_argument("--epochs", type=int, metavar="N", help="epoch count")
    submit.add_argument("--batch-size", type=int, metavar="N")
    rate = submit.add_mutually_exclusive_group()
    rate.add_argument("--learning-rate", type=float, metavar="F")
    rate.add_argument("--learning-rate-multiplier", type=float, metavar="F")
    submit.add_argument(
        "--tuned-model-id", metavar="ID", help="the model's id (default: derived from the name and the job id)"
    )
    submit.add_argument("--priority", type=int, default=0, metavar="N", help="higher runs first (default 0)")
    submit.add_argument(
        "--label", dest="labels", type=_label, action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    submit.add_argument(
        "--keep-until",
        type=_instant,
        metavar="TIME",
        help="purge the model after this ISO 8601 time (UTC if no offset)",
    )
    submit.add_argument("--eval", metavar="FILE", help="pairs (.jsonl or .csv) to test the finished model with")
    submit.add_argument("--json", action="store_true", help="print a JSON object instead of the bare id")
    submit.set_defaults(func=submit_command)

    jobs = subparsers.add_parser("jobs", help="list jobs, newest first")
    _add_filter_arguments(jobs, "only")
    jobs.add_argument("--limit", type=_positive, default=50, metavar="N", help="at most N jobs (default 50)")
    jobs.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    jobs.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=_interval,
        metavar="SECONDS",
        help="redraw the table in place every SECONDS (default 2) until Ctrl-C",
    )
    jobs.set_defaults(func=jobs_command)

    show = subparsers.add_parser("show", help="one job: request, state, results, loss curve and timeline")
    show.add_argument("job_id", type=int, metavar="ID")
    show.add_argument("--json", action="store_true", help="one JSON object: the job's fields and its events")
    show.set_defaults(func=show_command)

    cancel = subparsers.add_parser("cancel", help="ask the daemon to cancel jobs: by id, or by state and label")
    _add_selection_arguments(cancel, "cancel")
    cancel.set_defaults(func=cancel_command)

    retry = subparsers.add_parser(
        "retry", help="queue a copy of failed, invalid or cancelled jobs: by id, or by state and label"
    )
    _add_selection_arguments(retry, "retry")
    retry.set_defaults(func=retry_command)


def _add_filter_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument(
        "--state",
        dest="states",
        action="extend",
        nargs="+",
        default=[],
        choices=[state.value for state in State],
        metavar="STATE",
        help=f"{verb} jobs in these states (repeatable): " + ", ".join(state.value for state in State),
    )
    parser.add_argument(
        "--label",
        dest="filter_labels",
        type=_label,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{verb} jobs carrying this label (repeatable: all must match)",
    )
    parser.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help=f"{verb} jobs created since WHEN: an ISO 8601 time (UTC if no offset) or an age such as 30m, 2h, 7d",
    )


def _add_selection_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("job_ids", type=int, nargs="*", metavar="ID", help=f"the jobs to {verb} (their ids)")
    _add_filter_arguments(parser, verb)
    parser.add_argument("--yes", action="store_true", help="do not ask before acting on more than one job")
    parser.add_argument("--json", action="store_true", help="a JSON list: one object per job")


# ---- argument types -----------------------------------------------------------------------------------------


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    # Naive times mean UTC, as they do for a producer's plain-SQL INSERT.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _since(text: str) -> datetime:
    """An ISO 8601 time, or an age back from now: 90s, 30m, 2h, 7d."""
    age = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if age:
        seconds = float(age.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[age.group(2)]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        return _instant(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time or an age such as 2h or 7d, got {text!r}"
        ) from None


def _interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0.1 and 3600 seconds, got {text}")
    return seconds


def _filter(args: argparse.Namespace) -> JobFilter:
    return JobFilter(
        states=frozenset(State(state) for state in args.states),
        labels=tuple(args.filter_labels),
        since=args.since,
    )


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


# ---- running against the database ---------------------------------------------------------------------------


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    print(message, file=sys.stderr)
    return status


def _with_store(args: argparse.Namespace, action: StoreAction, settings: Settings | None = None) -> int:
    """Run `action` on a JobStore for the configured database; database problems become one line, exit 1."""
    if settings is None:
        settings = load_settings(args.config)  # a ConfigError goes up to main: exit 78
    missing = missing_sqlite_file(settings.database.url)
    if missing is not None:  # connecting would create an empty file there, and then fail the schema check
        return _fail(f"no database at {missing}: `tunekeeper db upgrade` creates it (database.url)")

    async def run() -> int:
        engine = make_engine(settings.database.url, settings.database.pool_size)
        try:
            await check_schema(engine)
            return await action(JobStore(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except (SchemaMismatch, UnreadableRow) as exc:
        return _fail(str(exc))
    except sa.exc.DBAPIError as exc:
        return _fail(f"database error: {_first_line(exc.orig if exc.orig is not None else exc)}")
    except OSError as exc:  # e.g. a PostgreSQL server that refuses the connection
        return _fail(f"cannot reach the database: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# ---- submit -------------------------------------------------------------------------------------------------


def submit_command(args: argparse.Namespace) -> int:
    labels: dict[str, str] = {}
    for key, value in args.labels:
        if key in labels:
            return _fail(f"--label {key} is given twice", EXIT_INVALID)
        labels[key] = value
    settings = load_settings(args.config)  # a ConfigError goes up to main: exit 78
    in_storage = args.file.startswith("gs://")  # Vertex AI: data already in Cloud Storage, used where it is
    source = args.file if in_storage else os.path.abspath(args.file)
    try:
        eval_data = _eval_pairs(args.eval)
        request = NewJob(
            display_name=args.display_name,
            training_file=source,
            base_model=args.base_model,
            epoch_count=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            learning_rate_multiplier=args.learning_rate_multiplier,
            eval_data=eval_data,
        )
        # The daemon's own check, with the configured service's limits; the model id the claim will fix is
        # stood in for by the one a first job would get.
        chosen = args.tuned_model_id
        if chosen is None and isinstance(args.display_name, str):
            chosen = naming.tuned_model_id(args.display_name, 1, settings.gemini.model_id_prefix)
        checked = check_job(
            request,
            settings=settings,
            rules=backend_rules(settings),
            owner=Owner(SUBMIT_DEPLOYMENT, 1),
            chosen_name=chosen,
            files=open_own_file,
        )
        dataset = checked.request.dataset
        training_data = None if in_storage else _stored_examples(dataset.examples, source, settings)
    except (DatasetError, InvalidRequest) as exc:
        return _fail(str(exc), EXIT_INVALID)

    # What was checked is what is tuned: the examples go into the row, so a file edited, deleted or out of the
    # service's sight later changes nothing.
    new_job = dataclasses.replace(
        request,
        training_data=training_data,
        training_file=source if in_storage else None,
        tuned_model_id=args.tuned_model_id,
        priority=args.priority,
        labels=labels or None,
        keep_until=args.keep_until,
    )

    async def insert(store: JobStore) -> int:
        # The daemon would reject a second job with the same model id; say so now (a race is still caught there).
        if new_job.tuned_model_id and await store.model_ids_with_jobs([new_job.tuned_model_id]):
            return _fail(f"tuned_model_id {new_job.tuned_model_id!r} is already used by another job", EXIT_INVALID)
        job_id = await store.add_job(new_job)
        if args.json:
            summary = {
                "id": job_id,
                "state": State.QUEUED.value,
                "display_name": new_job.display_name,
                "file": source,
                "examples": len(dataset.examples),
                "eval_pairs": len(eval_data or []),
            }
            print(render.dumps(summary))
        else:
            print(job_id)
        return 0

    return _with_store(args, insert, settings)


def _stored_examples(examples: tuple[Example, ...], source: str, settings: Settings) -> list[dict[str, Any]]:
    """The checked examples as the row's training_data, within data.max_submit_bytes."""
    stored = examples_json(examples)
    size = len(json.dumps(stored, ensure_ascii=False).encode())
    limit = settings.data.max_submit_bytes
    if size > limit:
        raise DatasetError(
            f"training_file {source}: its examples take {size:,} bytes as JSON; submit stores at most {limit:,} "
            "in the job (data.max_submit_bytes): raise it, or insert a job whose training_file is under one of "
            "the daemon's data roots"
        )
    return stored


def _eval_pairs(path: str | None) -> list[dict[str, str]] | None:
    """The --eval file's pairs, stored inline as eval_data (the daemon reads eval data only from the row)."""
    if path is None:
        return None
    try:
        pairs = load_examples(None, os.path.abspath(path))
    except DatasetError as exc:
        # load_examples names the source as a training file; here it is the eval file.
        raise DatasetError("--eval " + str(exc).removeprefix("training_file ")) from None
    return [{"text_input": pair.text_input, "output": pair.output} for pair in pairs]


# ---- jobs, show ---------------------------------------------------------------------------------------------


def jobs_command(args: argparse.Namespace) -> int:
    where = _filter(args)

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
        return _with_store(args, listing)
    if args.json:
        return _fail("--watch draws a table; --json prints once", EXIT_INVALID)
    try:
        return _with_store(args, watching)
    except KeyboardInterrupt:  # Ctrl-C is how a watch ends
        return 0


def show_command(args: argparse.Namespace) -> int:
    async def show(store: JobStore) -> int:
        job = await store.get_job(args.job_id)
        if job is None:
            return _fail(f"no job {args.job_id}")
        events = await store.events(job.id)
        if args.json:
            print(render.dumps(render.job_json(job) | {"events": [render.event_json(e) for e in events]}))
        else:
            print(render.job_details(job, events, datetime.now(UTC)))
        return 0

    return _with_store(args, show)


# ---- cancel, retry ------------------------------------------------------------------------------------------


async def _select(args: argparse.Namespace, verb: str, store: JobStore) -> list[int] | None:
    """The ids a bulk command acts on: those given, else those the filter selects; None when refused."""
    where = _filter(args)
    if args.job_ids and where != JobFilter():
        _fail(f"{verb}: give ids or a filter (--state, --label, --since), not both")
        return None
    if not args.job_ids and where == JobFilter():
        _fail(f"{verb}: which jobs? give their ids, or select them with --state, --label or --since")
        return None
    chosen = list(dict.fromkeys(args.job_ids)) if args.job_ids else await store.job_ids(where)
    if not chosen:
        print(f"{verb}: no job matches", file=sys.stderr)
    if len(chosen) > 1 and not args.yes and not _confirmed(f"{verb} {len(chosen)} jobs ({_ids(chosen)})?"):
        _fail(f"{verb}: nothing done ({len(chosen)} jobs selected; --yes acts without asking)")
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

    return _with_store(args, cancel)


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

    return _with_store(args, retry)


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
