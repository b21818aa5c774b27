"""`tunekeeper config check`: the effective settings, where each came from, and never a secret."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Cli

SECRET_KEY = "AIzaSy-config-check-secret-0123456789"


def test_prints_each_setting_with_its_source_and_masks_secrets(tmp_path: Path) -> None:
    cli = Cli(database_url=None, cwd=tmp_path)
    config = tmp_path / "tk.toml"
    config.write_text(
        '[database]\nurl = "postgresql+asyncpg://tk:hunter2-pw@127.0.0.1:5432/tk"\n[poll]\nmin_interval = 2\n'
    )
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "gemini-api-key").write_text(SECRET_KEY)
    result = cli(
        "config", "check", "--config", config,
        env={"TUNEKEEPER_LOG__LEVEL": "debug", "CREDENTIALS_DIRECTORY": str(credentials)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = {line.split("=", 1)[0].strip(): line for line in result.stdout.splitlines() if "=" in line}
    assert lines["poll.min_interval"].endswith(f"# file {config}")
    assert lines["log.level"].endswith("# environment TUNEKEEPER_LOG__LEVEL")
    assert lines["gemini.api_key"].endswith("# systemd credential gemini-api-key")
    assert '"<set>"' in lines["gemini.api_key"]
    assert lines["poll.max_interval"].endswith("# default")
    assert "tk:***@127.0.0.1" in lines["database.url"]
    assert SECRET_KEY not in result.stdout + result.stderr
    assert "hunter2-pw" not in result.stdout + result.stderr
    assert "# credentials: ok" in result.stdout


def test_json_output(cli: Cli, tmp_path: Path) -> None:
    result = cli("config", "check", "--json", env={"TUNEKEEPER_GEMINI__API_KEY": SECRET_KEY})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True
    assert report["settings"]["gemini.api_key"] == {
        "value": "<set>",
        "source": "environment TUNEKEEPER_GEMINI__API_KEY",
    }
    assert SECRET_KEY not in result.stdout


def test_a_missing_credential_is_exit_78_with_one_line(cli: Cli) -> None:
    result = cli("config", "check")
    assert result.returncode == 78
    assert result.stderr.strip().splitlines() == [
        "config: gemini.api_key is not set: the Gemini API takes no call without it [file key gemini.api_key, "
        "or TUNEKEEPER_GEMINI__API_KEY, or the systemd credential gemini-api-key]"
    ]


def test_an_invalid_setting_is_exit_78_naming_the_key(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "tk.toml"
    config.write_text("[poll]\nmin_interval = -1\n")
    result = cli("config", "check", "--config", config)
    assert result.returncode == 78
    assert result.stderr.startswith("config: poll.min_interval = -1")
    assert len(result.stderr.strip().splitlines()) == 1
