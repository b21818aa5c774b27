"""Choosing jobs on the command line: the filter arguments (`--state`, `--label`, `--since`) that `jobs`, `cancel`
and `retry` share, and the argument types behind them."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

from tunekeeper.db.store import JobFilter
from tunekeeper.states import State


def add_filter_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
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
        type=label,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{verb} jobs carrying this label (repeatable: all must match)",
    )
    parser.add_argument(
        "--since",
        type=since,
        metavar="WHEN",
        help=f"{verb} jobs created since WHEN: an ISO 8601 time (UTC if no offset) or an age such as 30m, 2h, 7d",
    )


def label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    # Naive times mean UTC, as they do for a producer's plain-SQL INSERT.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def since(text: str) -> datetime:
    """An ISO 8601 time, or an age back from now: 90s, 30m, 2h, 7d."""
    age = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if age:
        seconds = float(age.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[age.group(2)]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        return instant(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time or an age such as 2h or 7d, got {text!r}"
        ) from None


def interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0.1 and 3600 seconds, got {text}")
    return seconds


def job_filter(args: argparse.Namespace) -> JobFilter:
    return JobFilter(
        states=frozenset(State(state) for state in args.states),
        labels=tuple(args.filter_labels),
        since=args.since,
    )


def positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number
