"""The `filter` of tuningJobs.list: the subset of AIP-160 the emulator understands.

Terms joined by `AND` (upper case, as AIP-160 spells it), each `FIELD OP VALUE`, the value quoted or bare:
- `state="JOB_STATE_RUNNING"`, `state=JOB_STATE_RUNNING`, `state!="JOB_STATE_FAILED"`;
- `labels.KEY="VALUE"` and `labels.KEY!="VALUE"` (a job without the label is != any value);
- `create_time>"2026-01-01T00:00:00Z"` (also `createTime`; operators `>`, `<`, `>=`, `<=`; RFC 3339).
Anything else (`OR`, `NOT`, parentheses, other fields, other operators) is 400 INVALID_ARGUMENT naming the part
that is not understood, never a filter silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tunekeeper.emulator.errors import invalid_argument
from tunekeeper.emulator.vertex.jobs import TuningJob
from tunekeeper.emulator.vertex.render import JOB_STATE_NUMBERS

_TERM = re.compile(
    r"\s*(?P<field>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)?)\s*(?P<op>!=|>=|<=|=|>|<)\s*"
    r'(?P<value>"(?:[^"\\]|\\.)*"|[^\s"()]+)\s*'
)
_AND = re.compile(r"AND\s+")
_SHOWN_CHARS = 60

Predicate = Callable[[TuningJob], bool]


def job_filter(text: str | None, now: float) -> Predicate:
    """A predicate for tuningJobs.list's `filter` (syntax in the module docstring), evaluated at `now`."""
    if text is None or not text.strip():
        return lambda job: True
    checks: list[Predicate] = []
    position = 0
    while True:
        match = _TERM.match(text, position)
        if match is None:
            raise _unsupported(text[position:])
        checks.append(_term(match, now))
        position = match.end()
        if position == len(text):
            break
        joiner = _AND.match(text, position)
        if joiner is None:
            raise _unsupported(text[position:])
        position = joiner.end()
    return lambda job: all(check(job) for check in checks)


def _unsupported(rest: str) -> Exception:
    shown = rest.strip()
    if len(shown) > _SHOWN_CHARS:
        shown = shown[:_SHOWN_CHARS] + "..."
    return invalid_argument(
        f"Unsupported filter at {shown!r}: supported are state=, state!=, labels.KEY=, labels.KEY!= and "
        "create_time with >, <, >=, <=, joined by AND.",
        "filter",
    )


def _value(raw: str) -> str:
    if raw.startswith('"'):
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return raw


def _term(match: re.Match[str], now: float) -> Predicate:
    field, op, value = match["field"], match["op"], _value(match["value"])
    if field == "state" and op in ("=", "!="):
        if value not in JOB_STATE_NUMBERS:
            raise invalid_argument(f"Invalid state in filter: {value[:_SHOWN_CHARS]!r} is not a JobState.", "filter")
        if op == "=":
            return lambda job: job.state(now)[0] == value
        return lambda job: job.state(now)[0] != value
    if field.startswith("labels.") and op in ("=", "!="):
        key = field.removeprefix("labels.")
        if op == "=":
            return lambda job: job.request.labels.get(key) == value
        return lambda job: job.request.labels.get(key) != value
    if field in ("create_time", "createTime") and op in (">", "<", ">=", "<="):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:  # RFC 3339 requires the offset (`Z` or `+01:00`)
            raise invalid_argument(f"Invalid timestamp in filter: {value[:_SHOWN_CHARS]!r} is not RFC 3339.", "filter")
        bound = _microseconds(moment)
        compare: dict[str, Callable[[int], bool]] = {
            ">": lambda created: created > bound,
            "<": lambda created: created < bound,
            ">=": lambda created: created >= bound,
            "<=": lambda created: created <= bound,
        }
        check = compare[op]
        # Compared as rendered (createTime has microseconds): a job's own createTime is not after itself.
        return lambda job: check(_microseconds(datetime.fromtimestamp(job.created_at, UTC)))
    raise _unsupported(match.group(0))


def _microseconds(moment: datetime) -> int:
    """Whole microseconds since the epoch, exactly (a float timestamp would round)."""
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
