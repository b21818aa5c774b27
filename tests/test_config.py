"""Settings: the shipped example file, overrides, and one-line errors for bad values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunekeeper.config import ConfigError, Settings, load_settings

EXAMPLE = Path(__file__).parent.parent / "config" / "tunekeeper.toml"


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TUNEKEEPER_") or key == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(key)


def test_the_example_file_documents_every_key_with_its_default() -> None:
    loaded = load_settings(EXAMPLE)
    assert loaded.model_dump() == Settings().model_dump()
    text = EXAMPLE.read_text()
    for section, model in Settings().model_dump().items():
        assert f"[{section}]" in text
        for key in model:
            assert f"{key} =" in text or f"# {key} =" in text, f"{section}.{key} is not documented"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[gemini]\nmax_active_jobs = 3\napi_key = "from-file"\n')
    monkeypatch.setenv("TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS", "7")
    settings = load_settings(config)
    assert settings.gemini.max_active_jobs == 7
    assert settings.gemini.api_key.get_secret_value() == "from-file"


def test_the_systemd_credential_supplies_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gemini-api-key").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load_settings().gemini.api_key.get_secret_value() == "from-credential"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS", "0", "gemini.max_active_jobs"),
        ("TUNEKEEPER_DATABASE__URL", "mysql://x", "database.url"),
        ("TUNEKEEPER_POLL__JITTER", "lots", "poll.jitter"),
        ("TUNEKEEPER_POLL__QUOTA_MIN_INTERVAL", "0", "poll.quota_min_interval"),
        ("TUNEKEEPER_LOG__LEVEL", "loud", "log.level"),
        ("TUNEKEEPER_PURGE__INTERVAL", "0", "purge.interval"),
        ("TUNEKEEPER_PURGE__FAILED_AFTER", "-5", "purge.failed_after"),
        ("TUNEKEEPER_POLL__MAX_INTERVAL", "1", "poll.max_interval"),  # below min_interval's default of 2
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert "\n" not in message
    assert named in message
    assert variable in message


def test_the_api_key_is_never_shown_in_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text("[gemini]\napi_key = 12345678901\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert "12345678901" not in str(raised.value)


def test_invalid_toml_and_a_missing_file_are_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[gemini\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "missing.toml")
