"""What the store hands out: immutable snapshots of rows, typed for the daemon."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import RowMapping

from tunekeeper.db.types import UNREADABLE, has_surrogates
from tunekeeper.states import State

# What each typed column must hold for the daemon to use the row; the request columns typed `object` are
# checked by dataset validation instead, which makes a job `invalid` naming the rule.
_INTEGERS: Final = ("id", "priority", "attempts", "total_steps", "completed_steps", "anchor_steps")
_NUMBERS: Final = ("progress_percent", "mean_loss", "eval_score")
_TEXTS: Final = (
    "tuned_model_id",
    "lease_owner",
    "operation_name",
    "tuned_model_name",
    "last_error",
    "backend",
    "training_uri",
    "tuned_endpoint_name",
    "sub_state",
)
_REQUIRED: Final = frozenset({"id", "priority", "attempts", "created_at"})
# where a column of a row that is shown anyway (`tunekeeper jobs`, `show`) could not be read
_EPOCH: Final = datetime.fromtimestamp(0, UTC)


class UnreadableRow(Exception):
    """A row the daemon cannot use: `column` holds a value of the wrong type or form (never quoted)."""

    def __init__(self, job_id: object, column: str) -> None:
        super().__init__(f"job {job_id}: column {column} cannot be read")
        self.job_id = job_id
        self.column = column

    @property
    def message(self) -> str:
        """The job's fixed `last_error`: the column, never its value (which may be anything a producer wrote)."""
        return f"the row cannot be read: column {self.column} holds a value of the wrong type or form"


def unreadable_column(values: dict[str, Any]) -> str | None:
    """The first column of a tuning_jobs row the daemon cannot use, or None."""
    for column, value in values.items():
        if value is UNREADABLE or (isinstance(value, str) and has_surrogates(value)):
            return column
        if value is None:
            if column in _REQUIRED:
                return column
        elif column in _INTEGERS:
            if not isinstance(value, int) or isinstance(value, bool):
                return column
        elif column in _NUMBERS:
            if not isinstance(value, int | float) or isinstance(value, bool):
                return column
        elif column in _TEXTS and not isinstance(value, str):
            return column
    return None


@dataclass(frozen=True, slots=True)
class Job:
    """One row of tuning_jobs.

    The request columns are typed `object` where a producer's plain-SQL INSERT can put anything in them
    (SQLite does not enforce column types); dataset validation turns them into checked values or an error.
    """

    id: int
    state: State
    display_name: object
    training_data: object
    training_file: object
    base_model: object
    epoch_count: object
    batch_size: object
    learning_rate: object
    learning_rate_multiplier: object
    tuned_model_id: str | None
    priority: int
    labels: object
    keep_until: datetime | None
    eval_data: object
    cancel_requested: bool
    attempts: int
    next_attempt_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    operation_name: str | None
    tuned_model_name: str | None
    last_error: str | None
    total_steps: int | None
    completed_steps: int | None
    progress_percent: float | None
    mean_loss: float | None
    snapshots: Any
    anchor_at: datetime | None
    anchor_steps: int | None
    progress_changed_at: datetime | None
    next_poll_at: datetime | None
    last_polled_at: datetime | None
    eval_score: float | None
    eval_results: Any
    created_at: datetime
    updated_at: datetime | None
    submitted_at: datetime | None
    finished_at: datetime | None
    purged_at: datetime | None
    backend: str | None = None
    training_uri: str | None = None
    tuned_endpoint_name: str | None = None
    sub_state: str | None = None
    unreadable: str | None = None
    """The first column that could not be read, in a row loaded to be shown (`from_row(shown=True)`)."""

    @classmethod
    def from_row(cls, row: RowMapping, *, shown: bool = False) -> Job:
        """The row as a Job, or UnreadableRow naming a column the daemon cannot use. `shown`: for commands that
        only display rows, load it anyway, unreadable values as None (`unreadable` names the first)."""
        values = dict(row)
        column = unreadable_column(values)
        if column is not None:
            if not shown:
                raise UnreadableRow(values.get("id"), column)
            values = {name: None if value is UNREADABLE else value for name, value in values.items()}
            values["created_at"] = values["created_at"] or _EPOCH
            values["unreadable"] = column
        values["state"] = State(values["state"])
        values["cancel_requested"] = bool(values["cancel_requested"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class JobEvent:
    id: int
    job_id: int | None
    at: datetime
    kind: str
    from_state: State | None
    to_state: State | None
    detail: dict[str, Any]

    @classmethod
    def from_row(cls, row: RowMapping) -> JobEvent:
        # job_events is only ever shown, and anyone may INSERT into it: what cannot be read is left out
        detail = row["detail"]
        return cls(
            id=row["id"],
            job_id=row["job_id"],
            at=row["at"] if isinstance(row["at"], datetime) else _EPOCH,
            kind=row["kind"] if isinstance(row["kind"], str) else str(row["kind"]),
            from_state=_state_or_none(row["from_state"]),
            to_state=_state_or_none(row["to_state"]),
            detail={"unreadable": "detail"} if detail is UNREADABLE else detail or {},
        )


def _state_or_none(value: object) -> State | None:
    return State(value) if isinstance(value, str) and value in State.__members__.values() else None


@dataclass(frozen=True, slots=True)
class NewJob:
    """The request columns of a job, as the CLI or a test inserts them (producers may use plain SQL instead)."""

    display_name: str
    training_data: Any = None
    training_file: str | None = None
    base_model: str | None = None
    epoch_count: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    learning_rate_multiplier: float | None = None
    tuned_model_id: str | None = None
    priority: int = 0
    labels: dict[str, Any] | None = None
    keep_until: datetime | None = None
    eval_data: Any = None
