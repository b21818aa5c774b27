"""The daemon's columns are the daemon's: a producer's INSERT cannot set them; display names are bounded.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

A row inserted as `succeeded` with someone else's `tuned_model_name` would be evaluated with the producer's
prompts and then purged: the daemon trusts what its own columns say. So a BEFORE INSERT trigger refuses a row
whose state is not `queued` or that sets any of the daemon's columns (every INSERT the daemon makes is a new
queued job too). UPDATEs are not guarded here: on PostgreSQL column privileges keep producers to the request
columns and `cancel_requested` (README, "A producer role").

A display name longer than DISPLAY_NAME_MAX characters is refused at INSERT and UPDATE: the services take 40
(Gemini API) or 128 (Vertex AI), and a name of megabytes would be loaded, logged and checked by the daemon
before it could say so. PostgreSQL gets a CHECK constraint (NOT VALID: rows already there are not re-read);
SQLite, where adding a CHECK means rebuilding the table, triggers that raise with the constraint's name.

Self-contained, as migrations are history: the column list is spelled out here, not imported.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DISPLAY_NAME_MAX = 1024
DISPLAY_NAME_CHECK = "ck_tuning_jobs_display_name_length"
GUARD = "tk_daemon_columns"  # named in the refusal, so a producer can look it up in README
# Every column of tuning_jobs that the daemon writes and that starts empty (state and attempts have defaults).
DAEMON_COLUMNS = (
    "next_attempt_at",
    "lease_owner",
    "lease_expires_at",
    "operation_name",
    "tuned_model_name",
    "last_error",
    "total_steps",
    "completed_steps",
    "progress_percent",
    "mean_loss",
    "snapshots",
    "anchor_at",
    "anchor_steps",
    "progress_changed_at",
    "next_poll_at",
    "last_polled_at",
    "eval_score",
    "eval_results",
    "updated_at",
    "submitted_at",
    "finished_at",
    "purged_at",
    "backend",
    "training_uri",
    "tuned_endpoint_name",
    "sub_state",
)
REFUSAL = (
    f"{GUARD}: a new job must have state 'queued' and none of the daemon's columns set "
    "(state, attempts, leases, operation_name, tuned_model_name, progress, results, timestamps, backend, ...)"
)
NAME_REFUSAL = f"{DISPLAY_NAME_CHECK}: display_name must have at most {DISPLAY_NAME_MAX} characters"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _set_by_insert(new: str) -> str:
    """SQL that is true when the inserted row sets state or any daemon column."""
    empty = " OR ".join(f"{new}.{column} IS NOT NULL" for column in DAEMON_COLUMNS)
    return f"{new}.state IS DISTINCT FROM 'queued' OR {new}.attempts IS DISTINCT FROM 0 OR {empty}"


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        condition = _set_by_insert("NEW").replace("IS DISTINCT FROM", "IS NOT")
        op.execute(
            f"CREATE TRIGGER {GUARD} BEFORE INSERT ON tuning_jobs WHEN {condition} "
            f"BEGIN SELECT RAISE(ABORT, {_literal(REFUSAL)}); END"
        )
        for event, name in (("INSERT", "insert"), ("UPDATE OF display_name", "update")):
            op.execute(
                f"CREATE TRIGGER {DISPLAY_NAME_CHECK}_{name} BEFORE {event} ON tuning_jobs "
                f"WHEN length(NEW.display_name) > {DISPLAY_NAME_MAX} "
                f"BEGIN SELECT RAISE(ABORT, {_literal(NAME_REFUSAL)}); END"
            )
        return
    op.execute(
        f"""
        CREATE FUNCTION {GUARD}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF {_set_by_insert("NEW")} THEN
                RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = {_literal(REFUSAL)};
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(f"CREATE TRIGGER {GUARD} BEFORE INSERT ON tuning_jobs FOR EACH ROW EXECUTE FUNCTION {GUARD}()")
    op.execute(
        f"ALTER TABLE tuning_jobs ADD CONSTRAINT {DISPLAY_NAME_CHECK} "
        f"CHECK (char_length(display_name) <= {DISPLAY_NAME_MAX}) NOT VALID"
    )


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        for name in ("insert", "update"):
            op.execute(f"DROP TRIGGER {DISPLAY_NAME_CHECK}_{name}")
        op.execute(f"DROP TRIGGER {GUARD}")
        return
    op.execute(f"ALTER TABLE tuning_jobs DROP CONSTRAINT {DISPLAY_NAME_CHECK}")
    op.execute(f"DROP TRIGGER {GUARD} ON tuning_jobs")
    op.execute(f"DROP FUNCTION {GUARD}()")
