"""The initial schema: tuning_jobs, job_events, leases.

Revision ID: 0001
Revises:
Create Date: 2024-06-01

PostgreSQL gets identity ids, jsonb, timestamptz and a NOTIFY trigger. SQLite gets AUTOINCREMENT ids (never
reused, so neither are the model ids derived from them), text timestamps in the form the code writes
('YYYY-MM-DD HH:MM:SS.ffffff', which sorts in time order) and named CHECK constraints that make a producer's
malformed INSERT fail at once, naming the column, instead of failing the job later.

The column types are spelled out here rather than imported from tunekeeper.db: a migration is history and
must not change when the code's types do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = ("queued", "submitting", "tuning", "succeeded", "failed", "invalid", "cancelling", "cancelled", "purged")
NOTIFY_CHANNEL = "tunekeeper_jobs"
PRODUCER_JSON_COLUMNS = ("training_data", "labels", "eval_data")


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamp() -> sa.types.TypeEngine[Any]:
    return sa.DateTime(timezone=True).with_variant(sa.Text(), "sqlite")


def _json() -> sa.types.TypeEngine[Any]:
    return postgresql.JSONB().with_variant(sa.Text(), "sqlite")


def _now(sqlite: bool) -> sa.TextClause:
    if sqlite:
        # strftime's %f gives milliseconds ('SS.SSS'); three more digits make the code's microsecond form
        return sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')")
    return sa.text("now()")


def _sqlite_checks() -> list[sa.CheckConstraint]:
    checks = [
        sa.CheckConstraint(f"{column} IS NULL OR json_valid({column})", name=op.f(f"ck_tuning_jobs_{column}_json"))
        for column in PRODUCER_JSON_COLUMNS
    ]
    checks.append(
        sa.CheckConstraint(
            # the GLOB keeps out numbers-as-text that datetime() would read as Julian days
            "keep_until IS NULL OR (typeof(keep_until) = 'text'"
            " AND keep_until GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'"
            " AND datetime(keep_until) IS NOT NULL)",
            name=op.f("ck_tuning_jobs_keep_until"),
        )
    )
    checks.append(sa.CheckConstraint("cancel_requested IN (0, 1)", name=op.f("ck_tuning_jobs_cancel_requested")))
    return checks


def upgrade() -> None:
    sqlite = op.get_context().dialect.name == "sqlite"
    states = ", ".join(f"'{state}'" for state in STATES)

    op.create_table(
        "tuning_jobs",
        sa.Column("id", _id(), sa.Identity(always=False), nullable=False),
        # the request: written by producers
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("training_data", _json()),
        sa.Column("training_file", sa.Text()),
        sa.Column("base_model", sa.Text()),
        sa.Column("epoch_count", sa.Integer()),
        sa.Column("batch_size", sa.Integer()),
        sa.Column("learning_rate", sa.Float()),
        sa.Column("learning_rate_multiplier", sa.Float()),
        sa.Column("tuned_model_id", sa.Text()),
        sa.Column("priority", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("labels", _json()),
        sa.Column("keep_until", _timestamp()),
        sa.Column("eval_data", _json()),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        # the daemon's bookkeeping
        sa.Column("state", sa.Text(), nullable=False, server_default=sa.text("'queued'")),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", _timestamp()),
        sa.Column("lease_owner", sa.Text()),
        sa.Column("lease_expires_at", _timestamp()),
        sa.Column("operation_name", sa.Text()),
        sa.Column("tuned_model_name", sa.Text()),
        sa.Column("last_error", sa.Text()),
        sa.Column("total_steps", sa.Integer()),
        sa.Column("completed_steps", sa.Integer()),
        sa.Column("progress_percent", sa.Float()),
        sa.Column("mean_loss", sa.Float()),
        sa.Column("snapshots", _json()),
        sa.Column("anchor_at", _timestamp()),
        sa.Column("anchor_steps", sa.Integer()),
        sa.Column("progress_changed_at", _timestamp()),
        sa.Column("next_poll_at", _timestamp()),
        sa.Column("last_polled_at", _timestamp()),
        sa.Column("eval_score", sa.Float()),
        sa.Column("eval_results", _json()),
        sa.Column("created_at", _timestamp(), nullable=False, server_default=_now(sqlite)),
        sa.Column("updated_at", _timestamp()),
        sa.Column("submitted_at", _timestamp()),
        sa.Column("finished_at", _timestamp()),
        sa.Column("purged_at", _timestamp()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tuning_jobs")),
        sa.CheckConstraint(f"state IN ({states})", name=op.f("ck_tuning_jobs_state")),
        *(_sqlite_checks() if sqlite else []),
        sqlite_autoincrement=True,
    )
    # the dispatcher's claim: the best queued jobs first
    op.create_index(
        op.f("ix_tuning_jobs_claim"),
        "tuning_jobs",
        ["state", sa.text("priority DESC"), "id"],
        postgresql_where=sa.text("state = 'queued'"),
        sqlite_where=sa.text("state = 'queued'"),
    )
    # Due leases and due polls: whole-table indexes rather than partial ones, because the store asks for
    # several states at once (polls of tuning jobs, evaluations of succeeded ones, the earliest due time).
    op.create_index(op.f("ix_tuning_jobs_lease_expires_at"), "tuning_jobs", ["state", "lease_expires_at"])
    op.create_index(op.f("ix_tuning_jobs_next_poll_at"), "tuning_jobs", ["state", "next_poll_at"])
    # The canceller's requests. A planner uses a partial index only when the query repeats its condition
    # in the same form: this is how SQLAlchemy renders the store's `cancel_requested.is_(True)`.
    op.create_index(
        op.f("ix_tuning_jobs_cancel_requested"),
        "tuning_jobs",
        ["state", "id"],
        postgresql_where=sa.text("cancel_requested IS true"),
        sqlite_where=sa.text("cancel_requested IS 1"),
    )
    # two jobs must never share a tuned model
    op.create_index(
        op.f("uq_tuning_jobs_tuned_model_id"),
        "tuning_jobs",
        ["tuned_model_id"],
        unique=True,
        postgresql_where=sa.text("tuned_model_id IS NOT NULL"),
        sqlite_where=sa.text("tuned_model_id IS NOT NULL"),
    )

    op.create_table(
        "job_events",
        sa.Column("id", _id(), sa.Identity(always=False), nullable=False),
        sa.Column("job_id", _id()),  # null: an event about no job (a purged orphan, say)
        sa.Column("at", _timestamp(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("from_state", sa.Text()),
        sa.Column("to_state", sa.Text()),
        sa.Column("detail", _json()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_job_events_job_id_id"), "job_events", ["job_id", "id"])

    op.create_table(
        "leases",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text()),
        sa.Column("expires_at", _timestamp()),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )

    if not sqlite:
        _create_notify_trigger()


def _create_notify_trigger() -> None:
    # An idle daemon LISTENs and reacts at once to new jobs and cancel requests; the payload names the job.
    op.execute(
        f"""
        CREATE FUNCTION tunekeeper_notify_job() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{NOTIFY_CHANNEL}', json_build_object('id', NEW.id, 'kind', TG_ARGV[0])::text);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER tuning_jobs_notify_insert AFTER INSERT ON tuning_jobs
        FOR EACH ROW EXECUTE FUNCTION tunekeeper_notify_job('insert')
        """
    )
    op.execute(
        """
        CREATE TRIGGER tuning_jobs_notify_cancel AFTER UPDATE OF cancel_requested ON tuning_jobs
        FOR EACH ROW WHEN (NEW.cancel_requested AND NOT OLD.cancel_requested)
        EXECUTE FUNCTION tunekeeper_notify_job('cancel')
        """
    )


def downgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        op.execute("DROP TRIGGER tuning_jobs_notify_cancel ON tuning_jobs")
        op.execute("DROP TRIGGER tuning_jobs_notify_insert ON tuning_jobs")
        op.execute("DROP FUNCTION tunekeeper_notify_job()")
    op.drop_table("leases")
    op.drop_table("job_events")  # drops its indexes too
    op.drop_table("tuning_jobs")
