"""The listener without a server: it never holds the daemon up (the PostgreSQL cases are in test_postgres)."""

from __future__ import annotations

import time

import port_for
import pytest
import structlog

from tunekeeper.db.listener import JobNotifications, to_asyncpg_dsn


def test_the_dsn_drops_the_sqlalchemy_driver() -> None:
    url = "postgresql+asyncpg://tk:p%40ss@127.0.0.1:5433/jobs?ssl=disable"
    assert to_asyncpg_dsn(url) == "postgresql://tk:p%40ss@127.0.0.1:5433/jobs?ssl=disable"


async def test_without_a_server_waits_time_out() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{port_for.select_random()}/nothing"
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        async with JobNotifications(url, connect_timeout=2.0) as notes:
            assert not notes.connected
            assert notes.backend_pid is None
            assert not await notes.wait(0.05)
    assert time.monotonic() - started < 5.0
    assert [entry["event"] for entry in logs][:1] == ["listener_unavailable"]


def test_sqlite_has_no_notifications() -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        JobNotifications("sqlite+aiosqlite:///tunekeeper.db")
