"""What a second tuning service needs on the job row: which backend ran the job, the training file it used,
the endpoint that serves the tuned model, and the service's finer state while the job runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

All four are the daemon's to write and start empty, so producers' INSERTs keep working unchanged. On Vertex AI
`operation_name` holds the tuning job's name and `tuned_model_name` the tuned model's; the Gemini API leaves
`training_uri` and `tuned_endpoint_name` empty (its model is its own endpoint).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("backend", "training_uri", "tuned_endpoint_name", "sub_state")


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("tuning_jobs", sa.Column(column, sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("tuning_jobs") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column)
