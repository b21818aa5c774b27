"""Purging a job's model no longer changes its state: `purged` stops being a state.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

The state records what happened to the job (succeeded, failed, cancelled); `purged_at` records that no model
remains. Before this revision the purger overwrote a succeeded or failed job's outcome with `purged`, so that
`jobs --state failed` lost it and `retry` refused it. Each such row gets its outcome back: the state its
last `purged` event started from (the job's history in job_events keeps that event unchanged), or, for a row
without one, the state its last other transition led to, else `succeeded`.

On PostgreSQL the state check no longer admits `purged`. On SQLite a check cannot be changed without
rebuilding the table, so the old check stays; nothing writes `purged` any more.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTCOMES = ("queued", "submitting", "tuning", "succeeded", "failed", "invalid", "cancelling", "cancelled")
CHECK_NAME = "ck_tuning_jobs_state"


def _checked(states: Sequence[str]) -> str:
    return "state IN ({})".format(", ".join(f"'{state}'" for state in states))


def upgrade() -> None:
    # The last `purged` event names the outcome it replaced; without one, the last transition that led
    # anywhere but `purged`. Events are append-only, so the greatest id is the latest.
    outcomes = ", ".join(f"'{state}'" for state in ("succeeded", "failed", "cancelled"))
    op.execute(
        sa.text(
            f"""
            UPDATE tuning_jobs SET state = COALESCE(
                (SELECT e.from_state FROM job_events e
                  WHERE e.job_id = tuning_jobs.id AND e.kind = 'purged' AND e.from_state IN ({outcomes})
                  ORDER BY e.id DESC LIMIT 1),
                (SELECT e.to_state FROM job_events e
                  WHERE e.job_id = tuning_jobs.id AND e.to_state IN ({outcomes})
                  ORDER BY e.id DESC LIMIT 1),
                'succeeded')
            WHERE state = 'purged'
            """
        )
    )
    if op.get_context().dialect.name == "postgresql":
        op.drop_constraint(op.f(CHECK_NAME), "tuning_jobs", type_="check")
        op.create_check_constraint(op.f(CHECK_NAME), "tuning_jobs", _checked(OUTCOMES))


def downgrade() -> None:
    # Rows keep their outcome: `purged` was never the only record of a purge (purged_at is).
    if op.get_context().dialect.name == "postgresql":
        op.drop_constraint(op.f(CHECK_NAME), "tuning_jobs", type_="check")
        op.create_check_constraint(op.f(CHECK_NAME), "tuning_jobs", _checked((*OUTCOMES, "purged")))
