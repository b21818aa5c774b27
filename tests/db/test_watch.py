"""SqliteChanges notices writes by other connections, and only those."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tunekeeper.db.watch import SqliteChanges


def test_a_commit_by_another_connection_is_noticed_once(sqlite_url: str) -> None:
    path = Path(sqlite_url.removeprefix("sqlite+aiosqlite:///"))
    with SqliteChanges(sqlite_url) as changes:
        assert not changes.changed(), "nothing happened yet"
        producer = sqlite3.connect(path)
        producer.execute("INSERT INTO tuning_jobs (display_name, training_data) VALUES ('x', '[]')")
        assert not changes.changed(), "not committed yet"
        producer.commit()
        assert changes.changed()
        assert not changes.changed(), "each change is reported once"
        producer.execute("SELECT count(*) FROM tuning_jobs").fetchone()
        assert not changes.changed(), "reads are not changes"
        producer.close()
