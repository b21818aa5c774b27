"""What the store hands out: immutable snapshots of rows, typed for the daemon."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping

from tunekeeper.states import State


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

    @classmethod
    def from_row(cls, row: RowMapping) -> Job:
        values = dict(row)
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
        return cls(
            id=row["id"],
            job_id=row["job_id"],
            at=row["at"],
            kind=row["kind"],
            from_state=State(row["from_state"]) if row["from_state"] else None,
            to_state=State(row["to_state"]) if row["to_state"] else None,
            detail=row["detail"] or {},
        )


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
