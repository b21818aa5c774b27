"""The deployment's identity: one row, made once per database.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

Every piece of work tunekeeper starts on a tuning service carries a mark naming this identity and the job, so
that two databases sharing one Google project (staging and production, or a SQLite file deleted and made anew,
whose job ids start again at 1) never adopt, evaluate or delete each other's models. The identity is a random
128-bit value made here, when the schema is made or upgraded, and never changed: a database restored from a
backup keeps it, as it keeps its jobs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    deployment = op.create_table(
        "deployment",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True).with_variant(sa.Text(), "sqlite"), nullable=False),
        # One row only: the check keeps a second identity from ever being inserted beside the first.
        sa.Column("singleton", sa.Boolean(), nullable=False, server_default=sa.true(), unique=True),
        sa.CheckConstraint("singleton", name="one_row"),
    )
    sqlite = op.get_context().dialect.name == "sqlite"
    # the code's timestamp forms, as in 0001: timestamptz, or SQLite text with microseconds
    now = sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')") if sqlite else sa.text("now()")
    op.execute(deployment.insert().values(id=uuid.uuid4().hex, created_at=now))


def downgrade() -> None:
    op.drop_table("deployment")
