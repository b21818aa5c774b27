"""Commands for people: submit, jobs, show, cancel, retry.

Each opens the configured database, checks that its schema is the one this code needs, does one thing through
the JobStore and disposes of the engine. `submit` validates the data with the daemon's own rules before
inserting anything, so a mistake is reported at once instead of as an `invalid` job later.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from tunekeeper.cli import render
from tunekeeper.config import load_settings
from tunekeeper.datasets import DatasetError, load_dataset, load_eval_pairs, load_examples, validate_request
from tunekeeper.db.engine import make_engine, missing_sqlite_file
from tunekeeper.db.migrate import SchemaMismatch, check_schema
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import CancelOutcome, JobStore
from tunekeeper.states import RETRYABLE, State

EXIT_FAILED = 1
EXIT_INVALID = 2  # as for argparse's usage errors: the request itself is wrong

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
    jobs.add_argument(
        "--state",
        dest="states",
        action="extend",
        nargs="+",
        default=[],
        choices=[state.value for state in State],
        metavar="STATE",
        help="only jobs in these states (repeatable): " + ", ".join(state.value for state in State),
    )
    jobs.add_argument("--limit", type=_positive, default=50, metavar="N", help="at most N jobs (default 50)")
    jobs.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    jobs.set_defaults(func=jobs_command)

    show = subparsers.add_parser("show", help="one job: request, state, results, loss curve and timeline")
    show.add_argument("job_id", type=int, metavar="ID")
    show.add_argument("--json", action="store_true", help="one JSON object: the job's fields and its events")
    show.set_defaults(func=show_command)

    cancel = subparsers.add_parser("cancel", help="ask the daemon to cancel a job")
    cancel.add_argument("job_id", type=int, metavar="ID")
    cancel.set_defaults(func=cancel_command)

    retry = subparsers.add_parser("retry", help="queue a copy of a failed, invalid or cancelled job")
    retry.add_argument("job_id", type=int, metavar="ID")
    retry.set_defaults(func=retry_command)


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


def _with_store(args: argparse.Namespace, action: StoreAction) -> int:
    """Run `action` on a JobStore for the configured database; database problems become one line, exit 1."""
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
    except SchemaMismatch as exc:
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
    training_file = os.path.abspath(args.file)
    try:
        # Shape only: the service's own limits are the daemon's backend's to check.
        examples = load_dataset(None, training_file).examples
        validate_request(
            args.display_name,
            args.epochs,
            args.batch_size,
            args.learning_rate,
            args.learning_rate_multiplier,
            args.tuned_model_id,
        )
        eval_data = _eval_pairs(args.eval)
    except DatasetError as exc:
        return _fail(str(exc), EXIT_INVALID)

    new_job = NewJob(
        display_name=args.display_name,
        training_file=training_file,
        base_model=args.base_model,
        epoch_count=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        learning_rate_multiplier=args.learning_rate_multiplier,
        tuned_model_id=args.tuned_model_id,
        priority=args.priority,
        labels=labels or None,
        keep_until=args.keep_until,
        eval_data=eval_data,
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
                "training_file": training_file,
                "examples": len(examples),
                "eval_pairs": len(eval_data or []),
            }
            print(render.dumps(summary))
        else:
            print(job_id)
        return 0

    return _with_store(args, insert)


def _eval_pairs(path: str | None) -> list[dict[str, str]] | None:
    """The --eval file's pairs, stored inline as eval_data (the daemon reads eval data only from the row)."""
    if path is None:
        return None
    try:
        pairs = load_examples(None, os.path.abspath(path))
    except DatasetError as exc:
        # load_examples names the source as a training file; here it is the eval file.
        raise DatasetError("--eval " + str(exc).removeprefix("training_file ")) from None
    eval_data = [{"text_input": pair.text_input, "output": pair.output} for pair in pairs]
    load_eval_pairs(eval_data)  # the same check the daemon makes on the column
    return eval_data


# ---- jobs, show ---------------------------------------------------------------------------------------------


def jobs_command(args: argparse.Namespace) -> int:
    async def listing(store: JobStore) -> int:
        found = await store.list_jobs(states=[State(s) for s in args.states], limit=args.limit)
        if args.json:
            print(render.dumps([render.job_summary_json(job) for job in found]))
        else:
            width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
            print(render.jobs_table(found, datetime.now(UTC), width=width))
        return 0

    return _with_store(args, listing)


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


def cancel_command(args: argparse.Namespace) -> int:
    job_id: int = args.job_id

    async def cancel(store: JobStore) -> int:
        outcome, state = await store.request_cancel(job_id)
        if outcome == CancelOutcome.NOT_FOUND:
            return _fail(f"no job {job_id}")
        assert state is not None
        if outcome == CancelOutcome.REQUESTED:
            print(f"cancel requested for job {job_id} ({state.value}); the daemon will cancel it")
        elif outcome == CancelOutcome.ALREADY_REQUESTED:
            print(f"cancel already requested for job {job_id} ({state.value})")
        elif state == State.CANCELLING:
            print(f"job {job_id} is already being cancelled")
        else:
            return _fail(f"job {job_id} is {state.value}; finished jobs cannot be cancelled")
        return 0

    return _with_store(args, cancel)


def retry_command(args: argparse.Namespace) -> int:
    job_id: int = args.job_id

    async def retry(store: JobStore) -> int:
        job = await store.get_job(job_id)
        if job is None:
            return _fail(f"no job {job_id}")
        if job.state not in RETRYABLE:
            return _fail(f"job {job_id} is {job.state.value}; only failed, invalid or cancelled jobs can be retried")
        new_id = await store.copy_job(job_id)
        if new_id is None:
            return _fail(f"no job {job_id}")
        print(new_id)
        return 0

    return _with_store(args, retry)
