"""Indexes for the status page: newest jobs of a state, and finished jobs by state and time.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

`(state, id)` lets a list of one state (or of several, one index range each) read its newest page without
scanning the jobs of other states, and serves the count by state. `(state, finished_at)` serves the recent
failures and the finished-jobs history (per state, a range of finish times; the count reads the index alone).
Neither changes what producers write.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tuning_jobs_state_id", "tuning_jobs", ["state", "id"])
    op.create_index("ix_tuning_jobs_state_finished_at", "tuning_jobs", ["state", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_tuning_jobs_state_finished_at", table_name="tuning_jobs")
    op.drop_index("ix_tuning_jobs_state_id", table_name="tuning_jobs")
