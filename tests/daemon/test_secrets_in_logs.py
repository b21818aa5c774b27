"""No secret reaches the journal: not a base URL's password in `daemon_started`, not the password of a database
URL in a rejected reload, in whatever encoding the file spells it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.harness import DaemonProcess, daemon_environment
from tunekeeper.emulator import Emulator

BASE_URL_PASSWORD = "base-url-pw-4711"
DATABASE_PASSWORD = "p@ss/w:rd"  # what the URL-encoded form below decodes to
ENCODED_DATABASE_PASSWORD = "p%40ss%2Fw%3Ard"


async def test_passwords_in_urls_never_reach_the_log(sqlite_url: str, emulator: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "tunekeeper.toml"
    config.write_text(f'[database]\nurl = "{sqlite_url}"\n')
    host = emulator.base_url.removeprefix("http://")
    env = daemon_environment(
        sqlite_url,
        f"http://tunekeeper:{BASE_URL_PASSWORD}@{host}",
        {"TUNEKEEPER_CONFIG": str(config)},
    )
    del env["TUNEKEEPER_DATABASE__URL"]  # the file's, so that a reload reads a new one
    daemon = DaemonProcess(tmp_path, env)
    await daemon.start()
    try:
        [started] = daemon.events("daemon_started")
        assert started["service"] == f"http://tunekeeper:***@{host}"
        # A reload of a file whose database URL is refused (no async driver named): rejected, and logged.
        config.write_text(f'[database]\nurl = "postgresql://tk:{ENCODED_DATABASE_PASSWORD}@db.internal/jobs"\n')
        daemon.signal(signal.SIGHUP)
        [rejected] = await daemon.wait_for_events("config_reload_rejected")
        assert "database.url" in rejected["error"]
        assert "postgresql://tk:***@db.internal/jobs" in rejected["error"]
        assert await daemon.stop(signal.SIGTERM) == 0
    finally:
        if daemon.running:
            await daemon.stop(signal.SIGKILL)
    logged = daemon.stdout_text() + daemon.stderr_text()
    for secret in (BASE_URL_PASSWORD, DATABASE_PASSWORD, ENCODED_DATABASE_PASSWORD, "p%40ss"):
        assert secret not in logged, secret


async def test_the_database_password_credential_is_used_and_never_logged(
    postgres_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    if make_url(postgres_url).password is not None:
        pytest.skip("the test server's URL carries a password of its own")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "database-password").write_text("pg-credential-pw-815\n")
    env = daemon_environment(postgres_url, emulator.base_url, {"CREDENTIALS_DIRECTORY": str(credentials)})
    daemon = DaemonProcess(tmp_path, env)
    await daemon.start()
    try:
        [started] = daemon.events("daemon_started")
        assert make_url(started["database"]).password == "***"  # it was in the URL the daemon connected with
        assert await daemon.stop(signal.SIGTERM) == 0
    finally:
        if daemon.running:
            await daemon.stop(signal.SIGKILL)
    assert "pg-credential-pw-815" not in daemon.stdout_text() + daemon.stderr_text()
