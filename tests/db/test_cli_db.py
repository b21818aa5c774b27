"""`tunekeeper db upgrade | check`, through the subcommand's own parser."""

from __future__ import annotations

import argparse
from pathlib import Path

import port_for
import pytest

from tunekeeper.cli import db as db_cli
from tunekeeper.config import ConfigError
from tunekeeper.db.migrate import HEAD_REVISION


def _run(config: Path, *argv: str) -> int:
    # the lead's parser adds --config globally; this stands in for it
    parser = argparse.ArgumentParser(prog="tunekeeper")
    parser.add_argument("--config", type=Path)
    db_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["--config", str(config), *argv])
    result: int = args.func(args)
    return result


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "tunekeeper.toml"
    path.write_text(f'[database]\nurl = "{url}"\n')
    return path


@pytest.fixture(autouse=True)
def _no_environment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNEKEEPER_DATABASE__URL", raising=False)
    monkeypatch.delenv("TUNEKEEPER_CONFIG", raising=False)


def test_check_at_head(database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(_config(tmp_path, database_url), "db", "check") == 0
    assert capsys.readouterr().out.strip().endswith(f": at revision {HEAD_REVISION}, up to date")


def test_upgrade_then_check(empty_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, empty_database_url)
    assert _run(config, "db", "check") == 1
    assert f"the code needs {HEAD_REVISION}: run `tunekeeper db upgrade`" in capsys.readouterr().out
    assert _run(config, "db", "upgrade") == 0
    assert capsys.readouterr().out.strip().endswith(f": at revision {HEAD_REVISION}")
    assert _run(config, "db", "check") == 0


def test_check_does_not_create_a_missing_sqlite_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.db"
    assert _run(_config(tmp_path, f"sqlite+aiosqlite:///{missing}"), "db", "check") == 1
    assert "no such database file" in capsys.readouterr().out
    assert not missing.exists()


def test_the_password_is_not_printed(postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with_password = postgres_url.replace("://postgres@", "://postgres:s3cret@")
    assert _run(_config(tmp_path, with_password), "db", "check") == 0  # trust auth ignores the password
    assert "s3cret" not in capsys.readouterr().out


def test_a_bad_config_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"database\.url"):
        _run(_config(tmp_path, "mysql://nope"), "db", "check")


def test_an_unreachable_database_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{port_for.select_random()}/tunekeeper"
    assert _run(_config(tmp_path, url), "db", "check") == 1
    assert _run(_config(tmp_path, url), "db", "upgrade") == 1
    err = capsys.readouterr().err
    assert err.count("cannot reach the database") == 2
    assert len(err.splitlines()) == 2
