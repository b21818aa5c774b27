"""SQLite specifics: CHECKs that name the bad column, ids never reused, the engine's PRAGMAs and IMMEDIATE
transactions, and the contract's plain-SQL INSERT through the sqlite3 command-line tool."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import DESIGN_INSERT
from tunekeeper.db import tables
from tunekeeper.db.engine import make_engine
from tunekeeper.db.migrate import alembic_config, upgrade


@pytest.fixture
def path(sqlite_url: str) -> Path:
    database = make_url(sqlite_url).database
    assert database is not None
    return Path(database)


@pytest.fixture
def db(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain driver connection: what a producer's script would use."""
    connection = sqlite3.connect(path, isolation_level=None)
    yield connection
    connection.close()


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(sqlite_url)
    yield engine
    await engine.dispose()


@pytest.mark.parametrize("column", ["training_data", "labels", "eval_data"])
def test_invalid_json_is_refused_naming_the_constraint(db: sqlite3.Connection, column: str) -> None:
    with pytest.raises(sqlite3.IntegrityError, match=f"CHECK constraint failed: ck_tuning_jobs_{column}_json"):
        db.execute(f"INSERT INTO tuning_jobs (display_name, {column}) VALUES ('x', '[{{\"text_input\": 1')")
    db.execute(f"INSERT INTO tuning_jobs (display_name, {column}) VALUES ('x', NULL)")
    db.execute(f"INSERT INTO tuning_jobs (display_name, {column}) VALUES ('x', '{{\"a\": [1, 2]}}')")


@pytest.mark.parametrize("keep_until", ["next tuesday", "2030-13-45 00:00:00", "2460000.5", 1893456000, ""])
def test_garbage_keep_until_is_refused_naming_the_constraint(db: sqlite3.Connection, keep_until: object) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed: ck_tuning_jobs_keep_until"):
        db.execute("INSERT INTO tuning_jobs (display_name, keep_until) VALUES ('x', ?)", (keep_until,))


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("2030-01-02 03:04:05", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2030-01-02 03:04:05.250000", datetime(2030, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)),
        ("2030-01-02T03:04:05Z", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2030-01-02T05:04:05+02:00", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2030-01-02", datetime(2030, 1, 2, tzinfo=UTC)),
    ],
)
async def test_iso_keep_until_is_accepted_and_read_by_the_code(
    db: sqlite3.Connection, engine: AsyncEngine, written: str, meant: datetime
) -> None:
    db.execute("INSERT INTO tuning_jobs (display_name, keep_until) VALUES ('x', ?)", (written,))
    async with engine.connect() as connection:
        assert await connection.scalar(sa.select(tables.tuning_jobs.c.keep_until)) == meant


def test_cancel_requested_must_be_a_boolean(db: sqlite3.Connection) -> None:
    db.execute(DESIGN_INSERT)
    db.execute("UPDATE tuning_jobs SET cancel_requested = TRUE WHERE id = 1")
    with pytest.raises(sqlite3.IntegrityError, match="ck_tuning_jobs_cancel_requested"):
        db.execute("UPDATE tuning_jobs SET cancel_requested = 'yes' WHERE id = 1")


def test_created_at_default_has_the_codes_sortable_format(db: sqlite3.Connection) -> None:
    db.execute(DESIGN_INSERT)
    (created_at,) = db.execute("SELECT created_at FROM tuning_jobs").fetchone()
    # UTCDateTime writes '%Y-%m-%d %H:%M:%S.%f': same width, so text order is time order
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", created_at)
    assert datetime.strptime(created_at, "%Y-%m-%d %H:%M:%S.%f")


def test_ids_are_never_reused(db: sqlite3.Connection) -> None:
    for _ in range(3):
        db.execute(DESIGN_INSERT)
    db.execute("DELETE FROM tuning_jobs WHERE id = 3")
    db.execute(DESIGN_INSERT)
    db.execute("DELETE FROM tuning_jobs")
    db.execute(DESIGN_INSERT)
    db.execute("INSERT INTO job_events (job_id, at, kind) VALUES (1, '2030-01-01 00:00:00.000000', 'x')")
    db.execute("DELETE FROM job_events")
    db.execute("INSERT INTO job_events (job_id, at, kind) VALUES (1, '2030-01-01 00:00:00.000000', 'x')")
    assert db.execute("SELECT id FROM tuning_jobs").fetchall() == [(5,)]
    assert db.execute("SELECT id FROM job_events").fetchall() == [(2,)]


def test_the_contracts_insert_works_from_the_sqlite3_tool(path: Path) -> None:
    if shutil.which("sqlite3") is None:
        pytest.skip("no sqlite3 command-line tool")
    script = f"{DESIGN_INSERT}\nUPDATE tuning_jobs SET cancel_requested = TRUE WHERE id = 1;\n"
    script += "SELECT id, state, cancel_requested, json_array_length(training_data) FROM tuning_jobs;\n"
    done = subprocess.run(["sqlite3", str(path)], input=script, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.strip() == "1|queued|1|2"


def test_a_bad_insert_from_the_sqlite3_tool_names_the_constraint(path: Path) -> None:
    if shutil.which("sqlite3") is None:
        pytest.skip("no sqlite3 command-line tool")
    script = "INSERT INTO tuning_jobs (display_name, training_data) VALUES ('x', 'text_input=1');"
    done = subprocess.run(["sqlite3", str(path)], input=script, capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "CHECK constraint failed: ck_tuning_jobs_training_data_json" in done.stderr


async def test_every_connection_gets_the_pragmas(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        pragmas = {
            name: await connection.scalar(sa.text(f"PRAGMA {name}"))
            for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
        }
    assert pragmas == {"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1, "synchronous": 1}


async def test_transactions_take_the_write_lock_up_front(engine: AsyncEngine, path: Path) -> None:
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.select(tables.tuning_jobs.c.id))  # only reads...
            # ...yet holds the write lock: another writer cannot start
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


# ---- migration 0005: what the daemon cannot read is refused at the INSERT -----------------------------------

DAEMON_TIMESTAMPS = ["next_attempt_at", "lease_expires_at", "next_poll_at", "created_at", "finished_at", "purged_at"]
REQUEST_NUMBERS = ["epoch_count", "batch_size", "priority", "learning_rate", "learning_rate_multiplier"]
DAEMON_NUMBERS = ["attempts", "total_steps", "completed_steps", "anchor_steps", "progress_percent", "mean_loss"]
DAEMON_NUMBERS += ["eval_score"]


def refused_update(db: sqlite3.Connection, column: str, value: object, constraint: str) -> None:
    """The daemon's columns are written by UPDATE (an INSERT may not set them at all)."""
    db.execute(DESIGN_INSERT)
    with pytest.raises(sqlite3.IntegrityError, match=f"CHECK constraint failed: {constraint}$"):
        db.execute(f"UPDATE tuning_jobs SET {column} = ?", (value,))


@pytest.mark.parametrize("column", DAEMON_TIMESTAMPS)
@pytest.mark.parametrize("value", ["soon", "2030-13-45 00:00:00", 1893456000])
def test_a_timestamp_that_cannot_be_read_is_refused(db: sqlite3.Connection, column: str, value: object) -> None:
    refused_update(db, column, value, f"ck_tuning_jobs_{column}")


@pytest.mark.parametrize("column", REQUEST_NUMBERS)
def test_text_in_a_request_number_column_is_refused(db: sqlite3.Connection, column: str) -> None:
    with pytest.raises(sqlite3.IntegrityError, match=f"CHECK constraint failed: ck_tuning_jobs_{column}$"):
        db.execute(f"INSERT INTO tuning_jobs (display_name, {column}) VALUES ('x', '5\x1b[2J')")


@pytest.mark.parametrize("column", DAEMON_NUMBERS)
def test_text_in_a_daemon_number_column_is_refused(db: sqlite3.Connection, column: str) -> None:
    refused_update(db, column, "5\x1b[2J", f"ck_tuning_jobs_{column}")


def test_numbers_written_as_text_are_still_accepted_as_numbers(db: sqlite3.Connection) -> None:
    """Column affinity stores '5' as 5: producers' valid INSERTs are unchanged."""
    db.execute(
        "INSERT INTO tuning_jobs (display_name, training_data, epoch_count, batch_size, priority, learning_rate)"
        """ VALUES ('x', '[{"text_input": "1", "output": "2"}]', '5', 2, '3', '0.001')"""
    )
    assert db.execute("SELECT epoch_count, priority, learning_rate FROM tuning_jobs").fetchone() == (5, 3, 0.001)


@pytest.mark.parametrize("column", ["snapshots", "eval_results"])
def test_the_daemons_json_columns_refuse_what_is_not_json(db: sqlite3.Connection, column: str) -> None:
    refused_update(db, column, "[NaN", f"ck_tuning_jobs_{column}_json")


async def test_the_upgrade_sets_aside_rows_that_break_the_new_checks(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade(url, "0003")
    with sqlite3.connect(path) as db:
        db.execute(DESIGN_INSERT)  # 1: fine
        db.execute("INSERT INTO tuning_jobs (display_name, attempts, next_poll_at) VALUES ('bad', 'x', 'soon')")
        db.execute("INSERT INTO tuning_jobs (display_name, state, mean_loss) VALUES ('done', 'failed', 'NaN!')")
        db.execute(DESIGN_INSERT)
        db.execute("DELETE FROM tuning_jobs WHERE id = 4")
        db.execute(  # as an earlier migration may have made: the rebuild keeps it
            "CREATE TRIGGER tk_guard BEFORE INSERT ON tuning_jobs WHEN NEW.display_name = 'guarded'"
            " BEGIN SELECT RAISE(ABORT, 'tk_guard: refused'); END"
        )
    await upgrade(url)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, state, attempts, next_poll_at, mean_loss, last_error FROM tuning_jobs").fetchall()
        db.execute(DESIGN_INSERT)
        new_id = db.execute("SELECT max(id) FROM tuning_jobs").fetchone()[0]
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    message = "the row cannot be read: column next_poll_at holds a value of the wrong type or form"
    assert rows == [
        (1, "queued", 0, None, None, None),
        (2, "invalid", 0, None, None, message),
        (3, "failed", 0, None, None, None),  # finished: only the value goes
    ]
    assert new_id == 5  # the AUTOINCREMENT counter survived the rebuild: ids are never reused
    assert {"ix_tuning_jobs_claim", "ix_tuning_jobs_next_poll_at", "uq_tuning_jobs_tuned_model_id"} <= indexes
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError, match="tk_guard: refused"):
        db.execute("INSERT INTO tuning_jobs (display_name) VALUES ('guarded')")


async def downgrade(url: str, revision: str) -> None:
    engine = make_engine(url)

    def run(connection: sa.Connection) -> None:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


async def test_downgrading_0005_takes_the_checks_away(tmp_path: Path) -> None:
    path = tmp_path / "down.db"
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade(url)
    await downgrade(url, "0004")
    with sqlite3.connect(path) as db:
        db.execute(DESIGN_INSERT)
        db.execute("UPDATE tuning_jobs SET attempts = 'text'")
        db.execute("UPDATE tuning_jobs SET attempts = 0")
        with pytest.raises(sqlite3.IntegrityError, match="ck_tuning_jobs_keep_until"):  # 0001's stay
            db.execute("UPDATE tuning_jobs SET keep_until = 'soon'")
    await upgrade(url)
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError, match="ck_tuning_jobs_attempts"):
        db.execute("UPDATE tuning_jobs SET attempts = 'text'")
