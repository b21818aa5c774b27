"""`tunekeeper purge`: one purge pass now, with a table of what went (or would go)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from tunekeeper.cli import render
from tunekeeper.cli.usage import add_command
from tunekeeper.config import Settings, load_settings, require_credentials, secrets_in
from tunekeeper.logs import configure_logging

if TYPE_CHECKING:
    from tunekeeper.daemon.purger import PurgeOutcome


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "purge",
        summary="delete stale, failed and cancelled models now",
        description="One purge pass now, by the [purge] policies, as the daemon runs them on its schedule: the\n"
        "models of failed and cancelled jobs, of jobs past keep_until or purge.max_age, and orphans (models\n"
        "carrying this deployment's mark whose job row is gone). Prints what it deleted or, with --dry-run,\n"
        "what it would delete.",
        exits={1: "a deletion failed (the table says which), or the database cannot be reached"},
    )
    parser.add_argument("--dry-run", action="store_true", help="only show what would be deleted")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.set_defaults(func=purge)


def purge(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    require_credentials(settings)
    configure_logging(
        "warning", "console" if sys.stderr.isatty() else "json", secrets=secrets_in(settings), stream=sys.stderr
    )
    outcomes = asyncio.run(_purge(settings, args.dry_run))
    if outcomes is None:
        print("another replica is purging right now; nothing done", file=sys.stderr)
        return 1
    if args.json:
        print(render.dumps([_as_dict(o) for o in outcomes]))
    else:
        print(_table(outcomes, dry_run=args.dry_run))
    return 0 if all(o.error is None for o in outcomes) else 1


async def _purge(settings: Settings, dry_run: bool) -> list[PurgeOutcome] | None:
    from tunekeeper.daemon.purger import Purger  # here, so that light commands start fast
    from tunekeeper.daemon.service import open_context

    async with open_context(settings) as context:
        return await Purger(context).run_once(dry_run=dry_run)


def _as_dict(outcome: PurgeOutcome) -> dict[str, object]:
    return {
        "policy": outcome.policy.value,
        "tuned_model": outcome.tuned_model,
        "job_id": outcome.job_id,
        "deleted": outcome.deleted,
        "already_gone": outcome.already_gone,
        "recheck_until": outcome.recheck_until.isoformat() if outcome.recheck_until is not None else None,
        "error": outcome.error,
    }


def _result(outcome: PurgeOutcome, *, dry_run: bool) -> str:
    if outcome.error is not None:
        return outcome.error
    if dry_run:
        return "would delete"
    if outcome.already_gone:
        return "already gone"
    if outcome.recheck_until is not None:
        return f"nothing yet; looked at again until {outcome.recheck_until:%Y-%m-%d %H:%M:%S}Z"
    return "deleted"


def _table(outcomes: list[PurgeOutcome], *, dry_run: bool) -> str:
    if not outcomes:
        return "nothing to purge"
    rows = []
    for o in outcomes:
        result = _result(o, dry_run=dry_run)
        job = str(o.job_id) if o.job_id is not None else "-"
        rows.append([job, o.policy.value, render.clean(o.tuned_model), render.clean(result)])
    return "\n".join(render.table(("JOB", "POLICY", "MODEL", "RESULT"), rows))
