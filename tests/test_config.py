"""Settings: the shipped example file, overrides, and one-line errors for bad values."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel
from sqlalchemy.engine import make_url

from tunekeeper.config import (
    ConfigError,
    Settings,
    _duration_seconds,
    find_vertex_credentials,
    load_settings,
    require_credentials,
    secrets_in,
)
from tunekeeper.daemon.poller import poll_policy
from tunekeeper.secrecy import secrets_in_file

EXAMPLE = Path(__file__).parent.parent / "config" / "tunekeeper.toml"


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TUNEKEEPER_") or key in ("CREDENTIALS_DIRECTORY", "GOOGLE_APPLICATION_CREDENTIALS"):
            monkeypatch.delenv(key)
    # No gcloud Application Default Credentials file but the tests' own.
    monkeypatch.setenv("CLOUDSDK_CONFIG", "/nonexistent/gcloud")


def test_the_example_file_documents_every_key_with_its_default() -> None:
    loaded = load_settings(EXAMPLE)
    assert loaded.model_dump() == Settings().model_dump()
    text = EXAMPLE.read_text()
    top_level = text[: text.index("\n[")]
    for section, model in Settings().model_dump().items():
        if not isinstance(model, dict):  # a top-level key, such as backend
            assert f"\n{section} = {json.dumps(model)}\n" in top_level, f"{section} is not documented above [sections]"
            continue
        assert f"\n[{section}]\n" in text
        for key in model:
            assert f"{key} =" in text or f"# {key} =" in text, f"{section}.{key} is not documented"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[gemini]\nmax_active_jobs = 3\napi_key = "from-file"\n')
    monkeypatch.setenv("TUNEKEEPER_GEMINI__MAX_ACTIVE_JOBS", "7")
    settings = load_settings(config)
    assert settings.gemini.max_active_jobs == 7
    assert settings.gemini.api_key.get_secret_value() == "from-file"


def duration_keys() -> list[tuple[str, str]]:
    """Every duration setting: (section, key) of the fields typed as seconds or as a timedelta."""
    found = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if not isinstance(model, type) or not issubclass(model, BaseModel):
            continue
        for key, inner in model.model_fields.items():
            optional = [getattr(arg, "__metadata__", ()) for arg in get_args(inner.annotation)]  # X | None
            checks = [*inner.metadata, *(check for metadata in optional for check in metadata)]
            if any(getattr(check, "func", None) is _duration_seconds for check in checks):
                found.append((section, key))
    return found


def test_every_duration_setting_is_one_of_a_known_list() -> None:
    # the parametrised tests below cover each; a new duration setting takes the same parser or this fails
    keys = duration_keys()
    assert ("daemon", "lease_seconds") in keys and ("purge", "max_age") in keys and ("poll", "max_interval") in keys
    assert len(keys) >= 25, keys


@pytest.mark.parametrize(("section", "key"), duration_keys())
def test_every_duration_accepts_seconds_and_iso_8601_in_the_file_and_the_environment(
    section: str, key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = getattr(getattr(Settings(), section), key)
    seconds = default.total_seconds() if isinstance(default, timedelta) else default
    if seconds is None or seconds <= 0:
        seconds = 86_400.0 if key == "give_up_after" else 3600.0  # a value every such key takes
    whole = int(seconds)
    iso = f"PT{whole}S" if whole == seconds else f"PT{seconds}S"

    def loaded() -> float:
        value = getattr(getattr(load_settings(config), section), key)
        return float(value.total_seconds() if isinstance(value, timedelta) else value)

    config = tmp_path / "t.toml"
    config.write_text(f'[{section}]\n{key} = "{iso}"\n')
    assert loaded() == seconds
    config.write_text(f"[{section}]\n{key} = {seconds}\n")
    assert loaded() == seconds
    config.write_text("")
    monkeypatch.setenv(f"TUNEKEEPER_{section.upper()}__{key.upper()}", iso)
    assert loaded() == seconds
    monkeypatch.setenv(f"TUNEKEEPER_{section.upper()}__{key.upper()}", str(seconds))
    assert loaded() == seconds


def test_a_duration_in_no_known_form_is_one_line_naming_the_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEKEEPER_POLL__MAX_INTERVAL", "a minute")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "poll.max_interval" in str(raised.value)
    assert "ISO 8601" in str(raised.value)


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
        ("TUNEKEEPER_BACKEND", "openai", "backend"),
        ("TUNEKEEPER_VERTEX__PROJECT", "My_Project", "vertex.project"),
        ("TUNEKEEPER_VERTEX__PROJECT", "short", "vertex.project"),
        ("TUNEKEEPER_VERTEX__PROJECT", "ends-with-hyphen-", "vertex.project"),
        ("TUNEKEEPER_VERTEX__LOCATION", "US Central", "vertex.location"),
        ("TUNEKEEPER_VERTEX__LOCATION", "uscentral", "vertex.location"),
        ("TUNEKEEPER_VERTEX__BASE_URL", "aiplatform.googleapis.com", "vertex.base_url"),
        ("TUNEKEEPER_VERTEX__BASE_URL", "https://aiplatform.googleapis.com/v1", "vertex.base_url"),
        ("TUNEKEEPER_VERTEX__API_VERSION", "v2", "vertex.api_version"),
        ("TUNEKEEPER_VERTEX__STORAGE_URL", "storage.googleapis.com", "vertex.storage_url"),
        ("TUNEKEEPER_VERTEX__STAGING_URI", "s3://bucket/x", "vertex.staging_uri"),
        ("TUNEKEEPER_VERTEX__STAGING_URI", "gs://Bucket/x", "vertex.staging_uri"),
        ("TUNEKEEPER_VERTEX__STAGING_URI", "gs://ab", "vertex.staging_uri"),
        ("TUNEKEEPER_VERTEX__STAGING_URI", "gs://192.168.1.1", "vertex.staging_uri"),
        ("TUNEKEEPER_VERTEX__STAGING_URI", "gs://google-data/x", "vertex.staging_uri"),
        ("TUNEKEEPER_VERTEX__STAGING_URI", "gs://bucket//x", "vertex.staging_uri"),
        ("TUNEKEEPER_VERTEX__STAGING_URI", "gs://bucket/../x", "vertex.staging_uri"),
        ("TUNEKEEPER_VERTEX__DEFAULT_BASE_MODEL", "", "vertex.default_base_model"),
        ("TUNEKEEPER_VERTEX__ADAPTER_SIZE", "3", "vertex.adapter_size"),
        ("TUNEKEEPER_VERTEX__ADAPTER_SIZE", "huge", "vertex.adapter_size"),
        ("TUNEKEEPER_VERTEX__LABELS", '{"Team": "ml"}', "vertex.labels"),
        ("TUNEKEEPER_VERTEX__LABELS", '{"team": "Machine Learning"}', "vertex.labels"),
        ("TUNEKEEPER_VERTEX__LABELS", '{"tunekeeper-job": "1"}', "vertex.labels"),
        ("TUNEKEEPER_VERTEX__LABELS", "team=ml", "vertex.labels"),
        ("TUNEKEEPER_VERTEX__MAX_ACTIVE_JOBS", "0", "vertex.max_active_jobs"),
        ("TUNEKEEPER_VERTEX__CREATES_PER_MINUTE", "0", "vertex.creates_per_minute"),
        ("TUNEKEEPER_VERTEX__MAX_CONCURRENT_CREATES", "0", "vertex.max_concurrent_creates"),
        ("TUNEKEEPER_VERTEX__MAX_CONNECTIONS", "0", "vertex.max_connections"),
        ("TUNEKEEPER_VERTEX__REQUEST_TIMEOUT", "0", "vertex.request_timeout"),
        ("TUNEKEEPER_VERTEX__CONNECT_TIMEOUT", "-1", "vertex.connect_timeout"),
        ("TUNEKEEPER_VERTEX__UPLOAD_TIMEOUT", "0", "vertex.upload_timeout"),
        ("TUNEKEEPER_VERTEX__MAX_RETRIES", "-1", "vertex.max_retries"),
        ("TUNEKEEPER_VERTEX__RETRY_BASE_DELAY", "0", "vertex.retry_base_delay"),
        ("TUNEKEEPER_VERTEX__RETRY_MAX_DELAY", "0.5", "vertex.retry_max_delay"),  # below retry_base_delay's 1.0
        ("TUNEKEEPER_VERTEX__GIVE_UP_AFTER", "3600", "vertex.give_up_after"),
        ("TUNEKEEPER_VERTEX__GIVE_UP_AFTER", "soon", "vertex.give_up_after"),
        ("TUNEKEEPER_VERTEX__CREDENTIALS_FILE", "a\nb", "vertex.credentials_file"),
        ("TUNEKEEPER_DATA__ROOTS", '["srv/data"]', "data.roots"),
        ("TUNEKEEPER_DATA__ROOTS", '["/srv/../etc"]', "data.roots"),
        ("TUNEKEEPER_DATA__MAX_SUBMIT_BYTES", "0", "data.max_submit_bytes"),
        ("TUNEKEEPER_HTTP__HOST", "", "http.host"),
        ("TUNEKEEPER_HTTP__HOST", "  ", "http.host"),
        ("TUNEKEEPER_HTTP__IDLE_TIMEOUT", "0", "http.idle_timeout"),
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


@pytest.mark.parametrize(
    ("toml", "secret"),
    [
        ('[gemini]\napi-key = "misspelt-secret"\n', "misspelt-secret"),  # an unknown key: perhaps a secret one
        ('gemini = "section-secret"\n', "section-secret"),  # the section that holds the key
    ],
)
def test_values_near_a_secret_are_hidden_too(tmp_path: Path, toml: str, secret: str) -> None:
    config = tmp_path / "t.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert secret not in str(raised.value)
    assert "<hidden>" in str(raised.value)


def test_invalid_toml_and_a_missing_file_are_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[gemini\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "missing.toml")


# The backend choice and [vertex].


def service_account_key(path: Path, **changes: object) -> Path:
    """A key file shaped like Google's (the key itself is a placeholder: only its presence is checked here)."""
    key: dict[str, object] = {
        "type": "service_account",
        "project_id": "tuning-project",
        "private_key_id": "0123abcd",
        "private_key": "-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----\n",
        "client_email": "tunekeeper@tuning-project.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    key.update(changes)
    path.write_text(json.dumps({k: v for k, v in key.items() if v is not None}))
    return path


def test_the_backend_is_gemini_and_vertex_has_defaults_for_all_but_project_and_bucket() -> None:
    settings = load_settings()
    assert settings.backend == "gemini"
    vertex = settings.vertex
    assert (vertex.project, vertex.staging_uri, vertex.credentials_file) == ("", "", "")
    assert vertex.location == "us-central1"
    assert vertex.base_url == "https://us-central1-aiplatform.googleapis.com"
    assert vertex.api_version == "v1beta1"
    assert vertex.storage_url == "https://storage.googleapis.com"
    assert vertex.default_base_model == "gemini-2.5-flash"
    assert vertex.adapter_size == ""  # the service's choice
    assert vertex.labels == {}
    assert vertex.max_active_jobs == 1
    assert vertex.give_up_after == timedelta(days=2)


def test_vertex_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEKEEPER_BACKEND", "vertex")
    monkeypatch.setenv("TUNEKEEPER_VERTEX__PROJECT", "tuning-project")
    monkeypatch.setenv("TUNEKEEPER_VERTEX__LOCATION", "europe-west4")
    monkeypatch.setenv("TUNEKEEPER_VERTEX__STAGING_URI", "gs://tk-staging/tuning/")
    monkeypatch.setenv("TUNEKEEPER_VERTEX__LABELS", '{"team": "ml"}')
    monkeypatch.setenv("TUNEKEEPER_VERTEX__ADAPTER_SIZE", "8")
    monkeypatch.setenv("TUNEKEEPER_VERTEX__GIVE_UP_AFTER", "86400")
    settings = load_settings()
    assert settings.backend == "vertex"
    vertex = settings.vertex
    assert vertex.project == "tuning-project"
    assert vertex.base_url == "https://europe-west4-aiplatform.googleapis.com"
    assert vertex.staging_uri == "gs://tk-staging/tuning"  # the trailing slash dropped
    assert vertex.labels == {"team": "ml"}
    assert vertex.adapter_size == "ADAPTER_SIZE_EIGHT"
    assert vertex.give_up_after == timedelta(days=1)


def test_vertex_from_the_file_with_backend_a_top_level_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "t.toml"
    config.write_text(
        'backend = "vertex"\n\n[database]\nurl = "sqlite+aiosqlite:///x.db"\n\n'
        '[vertex]\nproject = "123456789012"\nlocation = "global"\nstaging_uri = "gs://tk.example.com"\n'
        'adapter_size = "ADAPTER_SIZE_SIXTEEN"\nlabels = {team = "ml", env = "prod"}\ngive_up_after = "P3D"\n'
    )
    monkeypatch.setenv("TUNEKEEPER_VERTEX__LABELS", '{"cost-centre": "42"}')  # added to the file's labels
    settings = load_settings(config)
    assert settings.backend == "vertex"
    assert settings.database.url == "sqlite+aiosqlite:///x.db"
    vertex = settings.vertex
    assert vertex.project == "123456789012"  # a project number will do
    assert vertex.base_url == "https://aiplatform.googleapis.com"
    assert vertex.staging_uri == "gs://tk.example.com"
    assert vertex.adapter_size == "ADAPTER_SIZE_SIXTEEN"
    assert vertex.labels == {"team": "ml", "env": "prod", "cost-centre": "42"}
    assert vertex.give_up_after == timedelta(days=3)


def test_settings_with_labels_stay_hashable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEKEEPER_VERTEX__LABELS", '{"team": "ml", "env": "prod"}')
    with_labels = load_settings()
    monkeypatch.setenv("TUNEKEEPER_VERTEX__LABELS", '{"env": "prod", "team": "ml"}')
    assert hash(with_labels) == hash(load_settings())
    assert with_labels.vertex == load_settings().vertex


@pytest.mark.parametrize(
    ("location", "base_url"),
    [
        ("us-central1", "https://us-central1-aiplatform.googleapis.com"),
        ("europe-west4", "https://europe-west4-aiplatform.googleapis.com"),
        ("northamerica-northeast1", "https://northamerica-northeast1-aiplatform.googleapis.com"),
        ("global", "https://aiplatform.googleapis.com"),
        ("eu", "https://aiplatform.eu.rep.googleapis.com"),
    ],
)
def test_the_base_url_follows_the_location(monkeypatch: pytest.MonkeyPatch, location: str, base_url: str) -> None:
    monkeypatch.setenv("TUNEKEEPER_VERTEX__LOCATION", location)
    assert load_settings().vertex.base_url == base_url


def test_an_explicit_base_url_wins_over_the_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[vertex]\nlocation = "europe-west4"\nbase_url = "http://127.0.0.1:8123/"\n')
    assert load_settings(config).vertex.base_url == "http://127.0.0.1:8123"
    monkeypatch.setenv("TUNEKEEPER_VERTEX__BASE_URL", "")  # empty: derived again
    assert load_settings(config).vertex.base_url == "https://europe-west4-aiplatform.googleapis.com"


@pytest.fixture
def vertex_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """backend = vertex with project and bucket set: only the credential is left to find."""
    monkeypatch.setenv("TUNEKEEPER_BACKEND", "vertex")
    monkeypatch.setenv("TUNEKEEPER_VERTEX__PROJECT", "tuning-project")
    monkeypatch.setenv("TUNEKEEPER_VERTEX__STAGING_URI", "gs://tk-staging/tuning")
    return monkeypatch


def test_gemini_needs_the_api_key_and_nothing_of_vertex(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"gemini\.api_key is not set"):
        require_credentials(load_settings())
    monkeypatch.setenv("TUNEKEEPER_GEMINI__API_KEY", "k")
    require_credentials(load_settings())


@pytest.mark.parametrize(
    ("unset", "named"),
    [("TUNEKEEPER_VERTEX__PROJECT", "vertex.project"), ("TUNEKEEPER_VERTEX__STAGING_URI", "vertex.staging_uri")],
)
def test_vertex_needs_a_project_and_a_staging_bucket(vertex_env: pytest.MonkeyPatch, unset: str, named: str) -> None:
    vertex_env.setenv("TUNEKEEPER_GEMINI__API_KEY", "a Gemini key is no help")
    vertex_env.delenv(unset)
    with pytest.raises(ConfigError) as raised:
        require_credentials(load_settings())
    [line] = str(raised.value).splitlines()
    assert f"{named} is not set" in line and unset in line


def test_vertex_without_any_credential_names_every_place_one_can_come_from(vertex_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as raised:
        require_credentials(load_settings())
    [line] = str(raised.value).splitlines()
    for place in (
        "vertex.credentials_file",
        "TUNEKEEPER_VERTEX__CREDENTIALS_FILE",
        "vertex-service-account",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "application_default_credentials.json",
    ):
        assert place in line


def test_a_credentials_file_that_is_a_key_is_found(vertex_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = service_account_key(tmp_path / "sa.json")
    vertex_env.setenv("TUNEKEEPER_VERTEX__CREDENTIALS_FILE", str(key))
    settings = load_settings()
    require_credentials(settings)
    found = find_vertex_credentials(settings)
    assert (found.path, found.origin, found.kind) == (key, "vertex.credentials_file", "service_account")


SECRET_TEXT = "-----BEGIN PRIVATE KEY-----MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"


@pytest.mark.parametrize(
    ("write", "problem"),
    [
        (None, "no such file"),
        (lambda path: path.mkdir(), "not a regular file"),
        (lambda path: path.write_text(f"private_key = {SECRET_TEXT}\n"), "not a JSON key file"),
        (lambda path: path.write_text(f'["{SECRET_TEXT}"]'), "not a JSON key file"),
        (lambda path: path.write_bytes(b"\xff\xfe" + SECRET_TEXT.encode()), "not a JSON key file"),
        (lambda path: service_account_key(path, type="authorized_user"), "type is 'authorized_user'"),
        (lambda path: service_account_key(path, type=SECRET_TEXT), "type is other"),
        (lambda path: service_account_key(path, private_key=None, token_uri=""), "missing private_key, token_uri"),
        (lambda path: service_account_key(path, client_email=None, note=SECRET_TEXT), "missing client_email"),
    ],
)
def test_a_credentials_file_that_is_no_key_is_one_line_without_its_content(
    vertex_env: pytest.MonkeyPatch, tmp_path: Path, write: object, problem: str
) -> None:
    path = tmp_path / "sa.json"
    if callable(write):
        write(path)
    vertex_env.setenv("TUNEKEEPER_VERTEX__CREDENTIALS_FILE", str(path))
    with pytest.raises(ConfigError) as raised:
        require_credentials(load_settings())
    [line] = str(raised.value).splitlines()
    assert problem in line
    assert "vertex.credentials_file" in line and str(path) in line and "TUNEKEEPER_VERTEX__CREDENTIALS_FILE" in line
    assert "BEGIN" not in line and "MIIE" not in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_credentials_file_is_one_line(vertex_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = service_account_key(tmp_path / "sa.json")
    key.chmod(0)
    vertex_env.setenv("TUNEKEEPER_VERTEX__CREDENTIALS_FILE", str(key))
    with pytest.raises(ConfigError, match=r"cannot be read \(Permission denied\)"):
        require_credentials(load_settings())


def test_the_systemd_credential_supplies_the_key_file(vertex_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = service_account_key(tmp_path / "vertex-service-account")
    vertex_env.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    vertex_env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))  # the credential wins
    settings = load_settings()
    require_credentials(settings)
    found = find_vertex_credentials(settings)
    assert (found.path, found.origin) == (key, "the systemd credential vertex-service-account")
    assert settings.vertex.credentials_file == ""  # found beside the settings, never read into them

    explicit = service_account_key(tmp_path / "explicit.json")  # but an explicit setting wins over the credential
    vertex_env.setenv("TUNEKEEPER_VERTEX__CREDENTIALS_FILE", str(explicit))
    assert find_vertex_credentials(load_settings()).path == explicit


def test_a_bad_systemd_credential_is_named(vertex_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "vertex-service-account").write_text(SECRET_TEXT)
    vertex_env.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ConfigError) as raised:
        require_credentials(load_settings())
    [line] = str(raised.value).splitlines()
    assert "the systemd credential vertex-service-account: not a JSON key file" in line
    assert "BEGIN" not in line


def test_application_default_credentials_from_the_environment(vertex_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = service_account_key(tmp_path / "adc.json")
    vertex_env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    found = find_vertex_credentials(load_settings())
    assert (found.path, found.origin, found.kind) == (key, "GOOGLE_APPLICATION_CREDENTIALS", "service_account")

    vertex_env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError) as raised:
        require_credentials(load_settings())
    assert "GOOGLE_APPLICATION_CREDENTIALS = " in str(raised.value) and "no such file" in str(raised.value)


def test_gclouds_application_default_credentials_file(vertex_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # `gcloud auth application-default login` writes a user's credential, not a service-account key.
    adc = tmp_path / "application_default_credentials.json"
    adc.write_text(
        json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"})
    )
    vertex_env.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    found = find_vertex_credentials(load_settings())
    assert (found.path, found.kind) == (adc, "authorized_user")

    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "c"}))
    with pytest.raises(ConfigError, match="missing client_secret, refresh_token"):
        require_credentials(load_settings())


def test_the_backend_chooses_the_poll_bounds_for_its_jobs() -> None:
    # Vertex AI's jobs of hours: its own bounds once the rate is known and before the step count.
    vertex = Settings(backend="vertex", poll={"min_interval": 3.0, "max_interval": 90.0})
    assert vertex.poll_max_interval_with_rate == 1800.0
    assert vertex.poll_interval_before_steps == 30.0
    policy = poll_policy(vertex)
    assert (policy.min_interval, policy.max_interval) == (3.0, 90.0)
    assert (policy.max_interval_with_rate, policy.no_total_interval) == (1800.0, 30.0)
    tuned = Settings(backend="vertex", vertex={"poll_max_interval_with_rate": 600, "poll_interval_before_steps": 5})
    assert (poll_policy(tuned).max_interval_with_rate, poll_policy(tuned).no_total_interval) == (600.0, 5.0)
    # The Gemini API's jobs of minutes: poll.max_interval throughout, the back-off from poll.min_interval.
    gemini = Settings(poll={"min_interval": 3.0, "max_interval": 90.0}, vertex={"poll_max_interval_with_rate": 600})
    assert (poll_policy(gemini).max_interval_with_rate, poll_policy(gemini).no_total_interval) == (90.0, 3.0)


@pytest.mark.parametrize("key", ["POLL_MAX_INTERVAL_WITH_RATE", "POLL_INTERVAL_BEFORE_STEPS"])
def test_vertex_poll_bounds_must_be_positive(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"TUNEKEEPER_VERTEX__{key}", "0")
    with pytest.raises(ConfigError, match=f"vertex.{key.lower()}"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        ("TUNEKEEPER_DATABASE__URL", "postgresql://tk:Pa%2Fss-word@db/x", "'postgresql://tk:***@db/x'"),
        ("TUNEKEEPER_DATABASE__URL", "mysql://db/x?sslmode=require&password=Pa%2Fss-word", "password=***"),
        ("TUNEKEEPER_VERTEX__BASE_URL", "ftp://tk:Pa%2Fss-word@host", "'ftp://tk:***@host'"),
        ("TUNEKEEPER_VERTEX__CREDENTIALS_FILE", '{"private_key": "Pa%2Fss-word"\n}', "<hidden>"),
    ],
)
def test_an_error_shows_a_url_without_its_password(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, shown: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert "Pa%2Fss-word" not in message and "Pa/ss-word" not in message
    assert shown in message


def test_the_database_password_comes_from_its_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "database-password").write_text("p@ss/w:rd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("TUNEKEEPER_DATABASE__URL", "postgresql+asyncpg://tunekeeper@db.internal/jobs")
    settings = load_settings()
    url = make_url(settings.database.url)
    assert (url.username, url.password, url.host, url.database) == ("tunekeeper", "p@ss/w:rd", "db.internal", "jobs")
    assert secrets_in(settings) == ["p@ss/w:rd"]  # so the logs redact it
    # a second password, or one for a SQLite file, is a mistake worth stopping for
    for url_text in ("postgresql+asyncpg://tunekeeper:other@db/jobs", "sqlite+aiosqlite:///./x.db"):
        monkeypatch.setenv("TUNEKEEPER_DATABASE__URL", url_text)
        with pytest.raises(ConfigError, match="database-password") as raised:
            load_settings()
        assert "p@ss" not in str(raised.value) and "other" not in str(raised.value)


def test_a_rejected_files_secrets_are_found_for_the_redactor(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text(
        '[database]\nurl = "postgresql://tk:p%40ss@db/x"\n[gemini]\napi-key = "misspelt-key"\nmax_active_jobs = -1\n'
    )
    found = secrets_in_file(config)
    assert {"p%40ss", "p@ss", "misspelt-key"} <= set(found)
    assert "-1" not in found and "db" not in found


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("TUNEKEEPER_GEMINI__BASE_URL", "http://gemini-proxy.internal:8080"),
        ("TUNEKEEPER_GEMINI__BASE_URL", "http://10.0.0.7"),
        ("TUNEKEEPER_VERTEX__BASE_URL", "http://vertex-proxy.internal"),
        ("TUNEKEEPER_VERTEX__STORAGE_URL", "http://[2001:db8::1]:9000"),
    ],
)
def test_plain_http_to_another_host_is_refused_unless_allowed(
    monkeypatch: pytest.MonkeyPatch, variable: str, url: str
) -> None:
    monkeypatch.setenv(variable, url)
    section = variable.split("__")[0].removeprefix("TUNEKEEPER_").lower()
    with pytest.raises(ConfigError, match=f"clear text.*{section}.allow_insecure_http") as raised:
        load_settings()
    assert "\n" not in str(raised.value)
    monkeypatch.setenv(f"TUNEKEEPER_{section.upper()}__ALLOW_INSECURE_HTTP", "true")
    assert load_settings() is not None


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"])
def test_plain_http_to_loopback_is_fine(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("TUNEKEEPER_GEMINI__BASE_URL", url)
    monkeypatch.setenv("TUNEKEEPER_VERTEX__BASE_URL", url)
    assert load_settings().gemini.base_url == url


def test_a_key_whose_token_uri_is_plain_http_to_another_host_is_refused_unless_allowed(
    vertex_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = service_account_key(tmp_path / "sa.json", token_uri="http://oauth.internal/token")
    vertex_env.setenv("TUNEKEEPER_VERTEX__CREDENTIALS_FILE", str(key))
    with pytest.raises(ConfigError, match=r"token_uri is not https://.*vertex\.allow_insecure_http") as raised:
        find_vertex_credentials(load_settings())
    assert "oauth.internal" not in str(raised.value)  # the key file's content is never shown
    vertex_env.setenv("TUNEKEEPER_VERTEX__ALLOW_INSECURE_HTTP", "true")
    assert find_vertex_credentials(load_settings()).kind == "service_account"
    service_account_key(key, token_uri="http://127.0.0.1:8765/token")  # the emulator's
    vertex_env.delenv("TUNEKEEPER_VERTEX__ALLOW_INSECURE_HTTP")
    assert find_vertex_credentials(load_settings()).kind == "service_account"
