"""The tables, as SQLAlchemy Core metadata for building queries.

The schema itself is created by the Alembic migrations in `migrations/versions`; those are the source of truth
(including dialect-specific CHECK constraints, triggers and partial indexes). A test checks that this metadata
and the migrated schema agree on columns.
"""

from __future__ import annotations

import sqlalchemy as sa

from tunekeeper.db.types import StoredFloat, StoredText, UTCDateTime, json_document
from tunekeeper.states import State

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

STATE_VALUES = tuple(state.value for state in State)

tuning_jobs = sa.Table(
    "tuning_jobs",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(), primary_key=True),
    # --- the request: written by producers ---
    sa.Column("display_name", StoredText(), nullable=False),
    sa.Column("training_data", json_document()),
    sa.Column("training_file", StoredText()),
    sa.Column("base_model", StoredText()),
    sa.Column("epoch_count", sa.Integer()),
    sa.Column("batch_size", sa.Integer()),
    sa.Column("learning_rate", StoredFloat()),
    sa.Column("learning_rate_multiplier", StoredFloat()),
    sa.Column("tuned_model_id", StoredText()),
    sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("labels", json_document()),
    sa.Column("keep_until", UTCDateTime()),
    sa.Column("eval_data", json_document()),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    # --- the daemon's bookkeeping ---
    sa.Column("state", StoredText(), nullable=False, server_default=State.QUEUED.value),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime()),
    sa.Column("lease_owner", StoredText()),
    sa.Column("lease_expires_at", UTCDateTime()),
    sa.Column("operation_name", StoredText()),
    sa.Column("tuned_model_name", StoredText()),
    sa.Column("last_error", StoredText()),
    # progress, as last observed; the poll plan's history lives in the same row
    sa.Column("total_steps", sa.Integer()),
    sa.Column("completed_steps", sa.Integer()),
    sa.Column("progress_percent", StoredFloat()),
    sa.Column("mean_loss", StoredFloat()),
    sa.Column("snapshots", json_document()),
    sa.Column("anchor_at", UTCDateTime()),
    sa.Column("anchor_steps", sa.Integer()),
    sa.Column("progress_changed_at", UTCDateTime()),
    sa.Column("next_poll_at", UTCDateTime()),
    sa.Column("last_polled_at", UTCDateTime()),
    # testing the finished model
    sa.Column("eval_score", StoredFloat()),
    sa.Column("eval_results", json_document()),
    # timestamps
    sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.current_timestamp()),
    sa.Column("updated_at", UTCDateTime()),
    sa.Column("submitted_at", UTCDateTime()),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("purged_at", UTCDateTime()),
    # --- added by migration 0003: what a second tuning service needs ---
    sa.Column("backend", StoredText()),  # the backend that ran the job ("gemini", "vertex")
    sa.Column("training_uri", StoredText()),  # the training file the service read (Vertex: a gs:// object)
    sa.Column("tuned_endpoint_name", StoredText()),  # what serves the tuned model, where that is not the model
    sa.Column("sub_state", StoredText()),  # the service's finer state while running (e.g. WAITING_FOR_QUOTA)
    sa.CheckConstraint(sa.column("state").in_(STATE_VALUES), name="state"),
    sqlite_autoincrement=True,  # ids, and so model ids, are never reused
)

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(), primary_key=True),
    sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite")),  # null: an event about no job
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("kind", StoredText(), nullable=False),
    sa.Column("from_state", StoredText()),
    sa.Column("to_state", StoredText()),
    sa.Column("detail", json_document()),
    sqlite_autoincrement=True,
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("owner", sa.Text()),
    sa.Column("expires_at", UTCDateTime()),
)

# The deployment's identity (one row, made by migration 0002): the mark on all the work this database starts.
deployment = sa.Table(
    "deployment",
    metadata,
    sa.Column("id", sa.Text(), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("singleton", sa.Boolean(), nullable=False, server_default=sa.true(), unique=True),
)
