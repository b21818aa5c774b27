"""The schema refuses what the daemon cannot read: on SQLite every timestamp, integer and number column and the
daemon's own JSON columns get CHECK constraints like those 0001 gave the request's JSON columns and keep_until;
on PostgreSQL the JSON columns get a depth limit.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

PostgreSQL's `timestamptz`, `integer`, `double precision` and `jsonb` refuse the same by their types. What no
type refuses is JSON nested thousands of levels deep (`jsonb` takes it; Python's parser cannot follow it): on
PostgreSQL a trigger per JSON column refuses one nested more than MAX_JSON_DEPTH containers deep, naming the
column, whenever it is written (a CHECK would be evaluated on every update of the row, and walk the training
data each time). SQLite's CHECKs cannot look inside a document that way; there the daemon's loader refuses such a row.

SQLite adds CHECK constraints only by rebuilding the table: the new table is the old one's own CREATE
statement with the checks added (so its columns, AUTOINCREMENT and earlier checks stay exactly as they were),
the rows are copied, the indexes and triggers remade from their own statements, and the AUTOINCREMENT counter
kept, so that no job id is ever reused.

A row that already breaks a new check cannot be copied as it is: the unreadable values are set to NULL (0 for
`priority` and `attempts`, the time of the upgrade for `created_at`) and, when the job was not finished, it is
made `invalid` with a message naming the column, as a running daemon would make it.

Valid INSERTs are unchanged: SQLite's column affinity stores a number written as text ('5') as a number.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPS = (
    "next_attempt_at",
    "lease_expires_at",
    "anchor_at",
    "progress_changed_at",
    "next_poll_at",
    "last_polled_at",
    "created_at",
    "updated_at",
    "submitted_at",
    "finished_at",
    "purged_at",
)
INTEGERS = ("epoch_count", "batch_size", "priority", "attempts", "total_steps", "completed_steps", "anchor_steps")
NUMBERS = ("learning_rate", "learning_rate_multiplier", "progress_percent", "mean_loss", "eval_score")
DAEMON_JSON = ("snapshots", "eval_results")
NOT_NULL_DEFAULTS = {"priority": "0", "attempts": "0", "created_at": "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"}
RUNNING_STATES = ("queued", "submitting", "tuning", "cancelling")


def _checks() -> dict[str, str]:
    """Constraint name -> condition; a column that breaks one is named by the constraint in SQLite's error."""
    checks: dict[str, str] = {}
    for column in TIMESTAMPS:
        # as 0001's keep_until: the GLOB keeps out numbers-as-text that datetime() would read as Julian days
        checks[column] = (
            f"{column} IS NULL OR (typeof({column}) = 'text'"
            f" AND {column} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'"
            f" AND datetime({column}) IS NOT NULL)"
        )
    for column in INTEGERS:
        checks[column] = f"{column} IS NULL OR typeof({column}) = 'integer'"
    for column in NUMBERS:
        checks[column] = f"{column} IS NULL OR typeof({column}) IN ('integer', 'real')"
    for column in DAEMON_JSON:
        checks[f"{column}_json"] = f"{column} IS NULL OR json_valid({column})"
    return {f"ck_tuning_jobs_{name}": condition for name, condition in checks.items()}


def _column_of(name: str) -> str:
    return name.removeprefix("ck_tuning_jobs_").removesuffix("_json")


# as tunekeeper.db.types.MAX_JSON_DEPTH, spelled out: a migration is history
MAX_JSON_DEPTH = 64
JSON_COLUMNS = ("training_data", "labels", "eval_data", "snapshots", "eval_results")


def upgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        _create_depth_triggers()
        return
    connection = op.get_bind()
    _repair_rows(connection)
    table_sql = connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tuning_jobs'"
    ).scalar_one()
    added = "".join(f",\n\tCONSTRAINT {name} CHECK ({condition})" for name, condition in _checks().items())
    _rebuild(connection, table_sql[: table_sql.rstrip().rindex(")")] + added + "\n)")


def downgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        for column in JSON_COLUMNS:
            op.execute(f"DROP TRIGGER tuning_jobs_{column}_depth ON tuning_jobs")
            op.execute(f"DROP FUNCTION tunekeeper_check_{column}_depth()")
        return
    connection = op.get_bind()
    table_sql = connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tuning_jobs'"
    ).scalar_one()
    for name in _checks():
        table_sql = re.sub(rf",\s*CONSTRAINT {name} CHECK \(.*\)(?=,|\s*\)$)", "", table_sql, count=1)
    _rebuild(connection, table_sql)


def _create_depth_triggers() -> None:
    # One trigger per column, firing only when that column is written: the daemon's progress writes to
    # `snapshots` must not walk the training data each time.
    # A container at level MAX_JSON_DEPTH (the root is level 0) means one more level of nesting than allowed.
    too_deep = f'strict $.**{{{MAX_JSON_DEPTH}}} ? (@.type() == "array" || @.type() == "object")'
    for column in JSON_COLUMNS:
        op.execute(
            f"""
            CREATE FUNCTION tunekeeper_check_{column}_depth() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.{column} IS NOT NULL AND jsonb_path_exists(NEW.{column}, '{too_deep}') THEN
                    RAISE EXCEPTION 'tuning_jobs.{column} is nested more than {MAX_JSON_DEPTH} levels deep'
                        USING ERRCODE = 'check_violation', CONSTRAINT = 'ck_tuning_jobs_{column}_depth';
                END IF;
                RETURN NEW;
            END
            $$
            """
        )
        op.execute(
            f"""
            CREATE TRIGGER tuning_jobs_{column}_depth BEFORE INSERT OR UPDATE OF {column} ON tuning_jobs
            FOR EACH ROW EXECUTE FUNCTION tunekeeper_check_{column}_depth()
            """
        )


def _repair_rows(connection: sa.Connection) -> None:
    """Make the rows that break a new check fit it, before they are copied (see the module's docstring)."""
    running = ", ".join(f"'{state}'" for state in RUNNING_STATES)
    for name, condition in _checks().items():
        column = _column_of(name)
        broken = f"NOT ({condition})"
        message = f"the row cannot be read: column {column} holds a value of the wrong type or form"
        connection.execute(
            sa.text(
                f"UPDATE tuning_jobs SET state = 'invalid', last_error = :message, lease_owner = NULL,"
                f" lease_expires_at = NULL, next_poll_at = NULL, cancel_requested = 0 WHERE {broken}"
                f" AND state IN ({running})"
            ),
            {"message": message},
        )
        replacement = NOT_NULL_DEFAULTS.get(column, "NULL")
        connection.exec_driver_sql(f"UPDATE tuning_jobs SET {column} = {replacement} WHERE {broken}")


def _rebuild(connection: sa.Connection, table_sql: str) -> None:
    """SQLite's way to change a table's constraints: a new table, the rows copied, the old one replaced."""
    # the table's indexes and triggers go with it: remade from their own statements, indexes first
    dependents = (
        connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND tbl_name = 'tuning_jobs'"
            " AND sql IS NOT NULL ORDER BY type = 'trigger', name"
        )
        .scalars()
        .all()
    )
    sequence = connection.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = 'tuning_jobs'").scalar()
    new_sql = re.sub(r"^CREATE TABLE\s+\"?tuning_jobs\"?", "CREATE TABLE tuning_jobs_new", table_sql, count=1)
    connection.exec_driver_sql(new_sql)
    connection.exec_driver_sql("INSERT INTO tuning_jobs_new SELECT * FROM tuning_jobs")
    connection.exec_driver_sql("DROP TABLE tuning_jobs")
    connection.exec_driver_sql("ALTER TABLE tuning_jobs_new RENAME TO tuning_jobs")
    for statement in dependents:
        connection.exec_driver_sql(statement)
    if sequence is not None:  # the counter of the dropped table went with it: ids are never reused
        connection.execute(
            sa.text("UPDATE sqlite_sequence SET seq = max(seq, :seq) WHERE name = 'tuning_jobs'"), {"seq": sequence}
        )
        connection.execute(
            sa.text(
                "INSERT INTO sqlite_sequence (name, seq) SELECT 'tuning_jobs', :seq"
                " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'tuning_jobs')"
            ),
            {"seq": sequence},
        )
