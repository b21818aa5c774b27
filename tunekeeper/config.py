"""Settings: a TOML file, overridden by TUNEKEEPER_* environment variables and systemd credentials.

Loaded and validated once, at start-up (and again on SIGHUP). A bad value raises `ConfigError` whose message is
one line naming the key, the value and what is allowed; the CLI turns it into exit status 78 (EX_CONFIG).
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

EX_CONFIG = 78
DEFAULT_CONFIG_FILE = Path("/etc/tunekeeper/tunekeeper.toml")
CREDENTIAL_NAME = "gemini-api-key"


class ConfigError(Exception):
    """A configuration problem, described in one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SQLITE_POOL_SIZE = 1
POSTGRES_POOL_SIZE = 5


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///./tunekeeper.db"
    # The daemon's connections; unset: SQLITE_POOL_SIZE or POSTGRES_POOL_SIZE (see daemon_pool_size).
    pool_size: int | None = Field(default=None, ge=1, le=100)
    listen: bool = True  # PostgreSQL only: LISTEN for new jobs and cancel requests
    # SQLite only: how soon after one look for others' writes the next may come (see db/watch.py)
    watch_interval: float = Field(default=0.2, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _known_driver(cls, url: str) -> str:
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def daemon_pool_size(self) -> int:
        """`pool_size`, or by default one connection on SQLite, where every transaction takes the write lock
        up front and a second connection would only wait for it, and POSTGRES_POOL_SIZE on PostgreSQL."""
        if self.pool_size is not None:
            return self.pool_size
        return SQLITE_POOL_SIZE if self.is_sqlite else POSTGRES_POOL_SIZE


class GeminiSettings(_Section):
    base_url: str = "https://generativelanguage.googleapis.com"
    api_key: SecretStr = SecretStr("")
    max_active_jobs: int = Field(default=4, ge=1, le=10_000)
    creates_per_minute: float = Field(default=60.0, gt=0)
    max_concurrent_creates: int = Field(default=8, ge=1, le=1000)
    max_connections: int = Field(default=64, ge=1, le=10_000)
    request_timeout: float = Field(default=60.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=6, ge=0, le=100)
    retry_base_delay: float = Field(default=0.5, gt=0)
    retry_max_delay: float = Field(default=30.0, gt=0)
    default_base_model: str = "models/gemini-1.5-flash-001-tuning"
    model_id_prefix: str = Field(default="", pattern=r"^([a-z][a-z0-9-]{0,19})?$")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url.rstrip("/")


class DaemonSettings(_Section):
    replica_name: str = ""  # defaults to host:pid; names the owner of leases
    # The safety net: how long a worker waits for work when nothing (NOTIFY, a change to the SQLite file, a due
    # time, another worker) has told it of any.
    idle_interval: float = Field(default=10.0, gt=0, le=3600)
    claim_batch: int = Field(default=32, ge=1, le=10_000)
    lease_seconds: float = Field(default=60.0, ge=1, le=86_400)
    max_attempts: int = Field(default=8, ge=1, le=1000)
    retry_base_delay: float = Field(default=5.0, gt=0)
    retry_max_delay: float = Field(default=600.0, gt=0)
    shutdown_grace: float = Field(default=20.0, ge=0, le=3600)


class PollSettings(_Section):
    min_interval: float = Field(default=2.0, gt=0)
    max_interval: float = Field(default=60.0, gt=0)
    jitter: float = Field(default=0.1, ge=0, le=0.5)  # share of the interval, both ways
    min_step_seconds: float = Field(default=1.0, ge=0)  # the service's fastest pace; 0 for a sped-up emulator
    # The shortest interval near a job's finish while queued jobs wait for a tuning slot (min_interval if lower).
    quota_min_interval: float = Field(default=0.25, gt=0, le=60)
    concurrency: int = Field(default=64, ge=1, le=10_000)

    @field_validator("max_interval")
    @classmethod
    def _not_below_min(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("min_interval")
        if low is not None and value < low:
            raise ValueError(f"must be at least poll.min_interval ({low})")
        return value


class PurgeSettings(_Section):
    enabled: bool = True
    interval: timedelta = timedelta(minutes=5)
    dry_run: bool = False
    max_deletes_per_run: int = Field(default=50, ge=1, le=100_000)
    cancelled_after: timedelta = timedelta(0)
    failed_after: timedelta = timedelta(0)
    max_age: timedelta | None = None  # off unless set
    orphans: bool = True  # models carrying this deployment's mark whose job row is gone
    lease_seconds: float = Field(default=300.0, ge=1)

    @field_validator("interval", "cancelled_after", "failed_after", "max_age", mode="before")
    @classmethod
    def _seconds_from_text(cls, value: object) -> object:
        # An environment variable is text: "300" means seconds, as the TOML file's 300 does (pydantic alone
        # reads a numeric string only as an ISO 8601 duration, and rejects it).
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return value

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0 seconds")
        return value

    @field_validator("cancelled_after", "failed_after", "max_age")
    @classmethod
    def _not_negative(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(0):
            raise ValueError("must not be negative")
        return value


class EvalSettings(_Section):
    enabled: bool = True
    concurrency: int = Field(default=4, ge=1, le=1000)


class HttpSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console", "auto"] = "auto"


class _CredentialSource(PydanticBaseSettingsSource):
    """The API key from systemd's `LoadCredential=gemini-api-key:...` ($CREDENTIALS_DIRECTORY)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            return {}
        path = Path(directory) / CREDENTIAL_NAME
        if not path.is_file():
            return {}
        return {"gemini": {"api_key": path.read_text().strip()}}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEKEEPER_", env_nested_delimiter="__", extra="forbid", frozen=True)

    database: DatabaseSettings = DatabaseSettings()
    gemini: GeminiSettings = GeminiSettings()
    daemon: DaemonSettings = DaemonSettings()
    poll: PollSettings = PollSettings()
    purge: PurgeSettings = PurgeSettings()
    eval: EvalSettings = EvalSettings()
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest priority first: explicit values, environment, systemd credential, the TOML file.
        return (init_settings, env_settings, _CredentialSource(settings_cls), TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read and validate the configuration; raise ConfigError with a one-line message on any problem."""
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config: {config_file}: no such file")
        try:
            tomllib.loads(config_file.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config: {config_file}: not valid TOML: {exc}") from None

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

    try:
        return _FromFile(**overrides)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


def require_credentials(settings: Settings) -> None:
    """Commands that call the tuning service need its credential: without it every job would fail later with
    401, so its absence is a configuration error now (ConfigError, one line naming where it can come from)."""
    if not settings.gemini.api_key.get_secret_value():
        raise ConfigError(
            "config: gemini.api_key is not set: the Gemini API takes no call without it [file key gemini.api_key, "
            f"or TUNEKEEPER_GEMINI__API_KEY, or the systemd credential {CREDENTIAL_NAME}]"
        )


def default_config_file() -> Path | None:
    """$TUNEKEEPER_CONFIG, else /etc/tunekeeper/tunekeeper.toml when it exists, else none."""
    named = os.environ.get("TUNEKEEPER_CONFIG")
    if named:
        return Path(named)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    env = "TUNEKEEPER_" + "__".join(str(part) for part in error["loc"]).upper()
    value = error.get("input")
    shown = "<hidden>" if "api_key" in key else repr(value)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    message = error["msg"].removeprefix("Value error, ")
    return f"config: {key} = {shown}: {message} [file key {key}, or {env}]{more}"
