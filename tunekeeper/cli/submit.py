"""`tunekeeper submit`: check a training file with the daemon's own check and queue a job holding what was checked.

The check is `daemon.intake`'s, with the configured service's limits, so a mistake is reported at once instead of
as an `invalid` job later; the checked examples go into the row: what was checked is what is tuned.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from typing import Any

from tunekeeper import naming
from tunekeeper.backends.port import Example, InvalidRequest, Owner
from tunekeeper.cli import render
from tunekeeper.cli.database import EXIT_INVALID, fail, with_store
from tunekeeper.cli.selection import instant, label
from tunekeeper.cli.usage import DATA_FORMATS, add_command
from tunekeeper.config import Settings, load_settings
from tunekeeper.daemon.intake import backend_rules, check_job
from tunekeeper.datasets import DatasetError, examples_json, load_examples, open_own_file
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.states import State

SUBMIT_DEPLOYMENT = "0" * 32  # the owner's mark plays no part in a check; the row gets its own when claimed


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = add_command(
        subparsers,
        "submit",
        summary="validate a training file and queue a tuning job",
        description="Check a training file (and --eval pairs) with the daemon's own rules and the configured\n"
        "service's limits, then queue a job holding the checked examples. Prints the new job's id.",
        notes=DATA_FORMATS + "\n\nFILE - reads the training data (JSONL) from standard input.",
        exits={
            1: "the database cannot be reached or is at the wrong schema revision",
            2: "the request or its data is invalid (one line names the line, column or field and the rule)",
        },
    )
    submit.add_argument("file", metavar="FILE", help="training data: .jsonl, .csv, gs:// (Vertex AI), or - for stdin")
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
        "--label", dest="labels", type=label, action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    submit.add_argument(
        "--keep-until",
        type=instant,
        metavar="TIME",
        help="purge the model after this ISO 8601 time (UTC if no offset)",
    )
    submit.add_argument("--eval", metavar="FILE", help="pairs (.jsonl or .csv) to test the finished model with")
    submit.add_argument("--json", action="store_true", help="print a JSON object instead of the bare id")
    submit.set_defaults(func=submit_command)


def submit_command(args: argparse.Namespace) -> int:
    labels: dict[str, str] = {}
    for key, value in args.labels:
        if key in labels:
            return fail(f"--label {key} is given twice", EXIT_INVALID)
        labels[key] = value
    settings = load_settings(args.config)  # a ConfigError goes up to main: exit 78
    if args.file == "-":
        with tempfile.TemporaryDirectory(prefix="tunekeeper-submit-") as directory:
            # Standard input is read once into a private file, checked like any other, and named as "-".
            copy = os.path.join(directory, "stdin.jsonl")
            with open(copy, "wb") as file:
                shutil.copyfileobj(sys.stdin.buffer, file)
            return _submit(args, settings, labels, copy, shown="-")
    return _submit(args, settings, labels, args.file, shown=args.file)


def _submit(args: argparse.Namespace, settings: Settings, labels: dict[str, str], file: str, *, shown: str) -> int:
    in_storage = file.startswith("gs://")  # Vertex AI: data already in Cloud Storage, used where it is
    source = file if in_storage else os.path.abspath(file)
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
        return fail(str(exc).replace(source, shown), EXIT_INVALID)

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
            return fail(f"tuned_model_id {new_job.tuned_model_id!r} is already used by another job", EXIT_INVALID)
        job_id = await store.add_job(new_job)
        if args.json:
            summary = {
                "id": job_id,
                "state": State.QUEUED.value,
                "display_name": new_job.display_name,
                "file": shown if shown == "-" else source,
                "examples": len(dataset.examples),
                "eval_pairs": len(eval_data or []),
            }
            print(render.dumps(summary))
        else:
            print(job_id)
        return 0

    return with_store(args, insert, settings)


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
