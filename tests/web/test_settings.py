"""The [web] settings: the token's sources, actions that need it, prefixes and host lists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunekeeper.config import EX_CONFIG, ConfigError, load_settings


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TUNEKEEPER_") or key == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(key)


def test_actions_without_a_token_stop_with_one_line_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEKEEPER_WEB__ACTIONS", "true")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert str(raised.value).startswith("config: web.token = <hidden>: is not set, and web.actions = true needs it")
    assert "\n" not in str(raised.value)


def test_the_token_comes_from_the_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "web-token").write_text("from-credential\n")
    (tmp_path / "gemini-api-key").write_text("key\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("TUNEKEEPER_WEB__ACTIONS", "true")
    settings = load_settings()
    assert settings.web.token.get_secret_value() == "from-credential"
    assert settings.gemini.api_key.get_secret_value() == "key"


def test_a_bad_token_value_is_never_shown(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[web]\ntoken = ["sekrit-value"]\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert "sekrit-value" not in str(raised.value)


def test_base_path_and_hosts_are_normalised_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEKEEPER_WEB__BASE_PATH", "/ops/tunekeeper/")
    monkeypatch.setenv("TUNEKEEPER_WEB__ALLOWED_HOSTS", "Status.Example, [::1]")
    settings = load_settings()
    assert settings.web.base_path == "/ops/tunekeeper"
    assert settings.web.allowed_hosts == ("status.example", "::1")
    for key, value in (("BASE_PATH", "no-slash"), ("BASE_PATH", "/a b"), ("ALLOWED_HOSTS", "a/b")):
        monkeypatch.setenv(f"TUNEKEEPER_WEB__{key}", value)
        with pytest.raises(ConfigError, match=f"web.{key.lower()}"):
            load_settings()
        monkeypatch.delenv(f"TUNEKEEPER_WEB__{key}")


def test_tunekeeper_web_exits_78_on_a_bad_setting(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TUNEKEEPER_")}
    env["TUNEKEEPER_WEB__ACTIONS"] = "true"
    done = subprocess.run(
        [sys.executable, "-m", "tunekeeper", "web"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == EX_CONFIG
    assert done.stderr.count("\n") == 1 and "web.token" in done.stderr


def test_tunekeeper_web_creates_no_database(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TUNEKEEPER_")}
    env["TUNEKEEPER_DATABASE__URL"] = f"sqlite+aiosqlite:///{tmp_path / 'none.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "tunekeeper", "web"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "no database at" in done.stderr and "tunekeeper db upgrade" in done.stderr
    assert not (tmp_path / "none.db").exists()


def test_config_check_names_the_token_credential_and_hides_its_value(tmp_path: Path) -> None:
    (tmp_path / "web-token").write_text("token-from-credential-77\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("TUNEKEEPER_")}
    env |= {"CREDENTIALS_DIRECTORY": str(tmp_path), "TUNEKEEPER_WEB__ACTIONS": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "tunekeeper", "config", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "token-from-credential-77" not in done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if "web.token" in line)
    assert "web-token" in line, line
