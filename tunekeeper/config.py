"""Settings: a TOML file, overridden by TUNEKEEPER_* environment variables and systemd credentials.

Loaded and validated once, at start-up (and again on SIGHUP). A bad value raises `ConfigError` whose message is
one line naming the key, the value and what is allowed; the CLI turns it into exit status 78 (EX_CONFIG).
Values that are secrets (secrecy.SECRET_KEYS) are never shown, and neither is the content of a key file.

`backend` chooses the tuning service: "gemini" (the Gemini API, `[gemini]`) or "vertex" (Vertex AI tuning jobs,
`[vertex]`). `require_credentials` checks, for the chosen one, what every call to it needs.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url

from tunekeeper.secrecy import display_url, in_clear_text, is_secret

EX_CONFIG = 78
DEFAULT_CONFIG_FILE = Path("/etc/tunekeeper/tunekeeper.toml")
CREDENTIAL_NAME = "gemini-api-key"  # the Gemini API key, from $CREDENTIALS_DIRECTORY
VERTEX_CREDENTIAL_NAME = "vertex-service-account"  # a service-account key file, from $CREDENTIALS_DIRECTORY
WEB_TOKEN_CREDENTIAL_NAME = "web-token"  # the status page's action token, from $CREDENTIALS_DIRECTORY
DATABASE_PASSWORD_CREDENTIAL = "database-password"  # the database password, from $CREDENTIALS_DIRECTORY
# URLs may carry a user and password (or a password= parameter): an error shows them without (display_url).
URL_KEYS = ("database.url", "gemini.base_url", "vertex.base_url", "vertex.storage_url")
# Not secret, but a pasted key file would be: shown by find_vertex_credentials as a path, never here.
_UNSHOWN_KEYS = ("vertex.credentials_file",)


class ConfigError(Exception):
    """A configuration problem, described in one line."""


def _duration_seconds(value: object) -> object:
    """Every duration setting's one parser: seconds (a number, or its text: an environment variable is text) or
    an ISO 8601 duration ("PT5M", "P2D"), as seconds. Anything else is left for the field's own check to refuse."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            return _ISO_DURATION.validate_python(text).total_seconds()
        except ValidationError:
            raise ValueError(f"{value!r} is neither seconds nor an ISO 8601 duration such as 'PT5M'") from None
    return value


_ISO_DURATION: TypeAdapter[timedelta] = TypeAdapter(timedelta)
# A duration in seconds, or one as timedelta: both read the same forms (see _duration_seconds).
Seconds = Annotated[float, BeforeValidator(_duration_seconds)]
Duration = Annotated[timedelta, BeforeValidator(_duration_seconds)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SQLITE_POOL_SIZE = 1
POSTGRES_POOL_SIZE = 5
IDLE_IN_TRANSACTION_TIMEOUT = 10.0  # seconds; see DatabaseSettings


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///./tunekeeper.db"
    # The daemon's connections; unset: SQLITE_POOL_SIZE or POSTGRES_POOL_SIZE (see daemon_pool_size).
    pool_size: int | None = Field(default=None, ge=1, le=100)
    listen: bool = True  # PostgreSQL only: LISTEN for new jobs and cancel requests
    # SQLite only: how soon after one look for others' writes the next may come (see db/watch.py)
    watch_interval: Seconds = Field(default=0.2, gt=0, le=60)
    # PostgreSQL only: the server ends a connection of ours left inside a transaction, with no statement running,
    # this long (a frozen replica), so that its locks do not hold every other replica up.
    idle_in_transaction_timeout: Seconds = Field(default=IDLE_IN_TRANSACTION_TIMEOUT, ge=0.1, le=3600)

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


def _http_url_checked(url: str, info: ValidationInfo, section: str) -> str:
    """An http:// or https:// URL; plain http only to this host's loopback, unless `allow_insecure_http`: the
    credential travels in a header, readable by anyone on the way over plain http."""
    if not url.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    if not info.data.get("allow_insecure_http") and in_clear_text(url):
        raise ValueError(
            "plain http:// to another host would send the credential in clear text: use https://, or set "
            f"{section}.allow_insecure_http = true"
        )
    return url.rstrip("/")


class GeminiSettings(_Section):
    # Plain http:// to a host other than this one's loopback (which the emulator uses) is refused without it.
    allow_insecure_http: bool = False
    base_url: str = "https://generativelanguage.googleapis.com"
    api_key: SecretStr = SecretStr("")
    max_active_jobs: int = Field(default=4, ge=1, le=10_000)
    creates_per_minute: float = Field(default=60.0, gt=0)
    # The budget shared by creates and evaluation calls (generateContent), as one token bucket.
    requests_per_minute: float = Field(default=600.0, gt=0)
    max_concurrent_creates: int = Field(default=8, ge=1, le=1000)
    max_connections: int = Field(default=64, ge=1, le=10_000)
    request_timeout: Seconds = Field(default=60.0, gt=0)
    connect_timeout: Seconds = Field(default=10.0, gt=0)
    max_retries: int = Field(default=6, ge=0, le=100)
    retry_base_delay: Seconds = Field(default=0.5, gt=0)
    retry_max_delay: Seconds = Field(default=30.0, gt=0)
    default_base_model: str = "models/gemini-1.5-flash-001-tuning"
    model_id_prefix: str = Field(default="", pattern=r"^([a-z][a-z0-9-]{0,19})?$")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str, info: ValidationInfo) -> str:
        return _http_url_checked(url, info, "gemini")


VERTEX_DEFAULT_LOCATION = "us-central1"
AdapterSize = Literal[
    "", "ADAPTER_SIZE_ONE", "ADAPTER_SIZE_TWO", "ADAPTER_SIZE_FOUR", "ADAPTER_SIZE_EIGHT", "ADAPTER_SIZE_SIXTEEN"
]
ADAPTER_SIZES: tuple[str, ...] = get_args(AdapterSize)[1:]
_ADAPTER_SIZE_NUMBERS = dict(zip(("1", "2", "4", "8", "16"), ADAPTER_SIZES, strict=True))  # 4: ADAPTER_SIZE_FOUR
RESERVED_LABEL_PREFIX = "tunekeeper"  # label keys the daemon sets itself, on every job (its ownership marks)
MAX_EXTRA_LABELS = 60  # Google allows 64 labels on a resource; the daemon keeps room for its own
_PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
_PROJECT_NUMBER = re.compile(r"[1-9][0-9]{0,18}")
_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]{1,2}")
_MULTI_REGIONS = ("us", "eu")  # served at aiplatform.{us|eu}.rep.googleapis.com
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]*[a-z0-9]")
_LABEL_KEY = re.compile(r"[^\W\d_][\w-]{0,63}")
_LABEL_VALUE = re.compile(r"[\w-]{0,64}")


def vertex_base_url(location: str) -> str:
    """Vertex AI's endpoint for a location: regional, the global one, or a multi-region's."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    if location in _MULTI_REGIONS:
        return f"https://aiplatform.{location}.rep.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def _bucket_problem(bucket: str) -> str | None:
    """What is wrong with a Cloud Storage bucket name, by Google's naming rules; None if nothing."""
    if not 3 <= len(bucket) <= (222 if "." in bucket else 63):
        return "it must have 3 to 63 characters (222 with dots)"
    if not _BUCKET.fullmatch(bucket):
        return "it may hold lowercase letters, digits, '-', '_' and '.', and must start and end with a letter or digit"
    if any(not part or len(part) > 63 for part in bucket.split(".")):
        return "each dot-separated part must have 1 to 63 characters"
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        pass
    else:
        return "it must not be an IP address"
    if bucket.startswith("goog") or "google" in bucket or "g00gle" in bucket:
        return "it must not start with 'goog' nor contain 'google'"
    return None


class VertexSettings(_Section):
    """Vertex AI tuning jobs (backend = "vertex"): where, as whom, and how hard to press the service."""

    # The Google Cloud project that runs (and pays for) the tuning jobs: its id or its number. Required for vertex.
    project: str = ""
    location: str = VERTEX_DEFAULT_LOCATION
    allow_insecure_http: bool = False  # as gemini.allow_insecure_http, for base_url and storage_url
    # Unset (or empty): derived from the location (vertex_base_url); the emulator's URL in tests.
    base_url: str = ""
    api_version: Literal["v1beta1", "v1"] = "v1beta1"
    storage_url: str = "https://storage.googleapis.com"
    # A service-account key file; empty: the systemd credential vertex-service-account, else Application Default
    # Credentials (see find_vertex_credentials).
    credentials_file: str = ""
    # gs://bucket/prefix: where training and validation files are uploaded. Required for vertex.
    staging_uri: str = ""
    default_base_model: str = "gemini-2.5-flash"
    adapter_size: AdapterSize = ""  # empty: the service's choice for the base model
    labels: dict[str, str] = Field(default_factory=dict)  # added to every tuning job
    max_active_jobs: int = Field(default=1, ge=1, le=10_000)
    creates_per_minute: float = Field(default=10.0, gt=0)
    requests_per_minute: float = Field(default=600.0, gt=0)  # as gemini.requests_per_minute
    max_concurrent_creates: int = Field(default=2, ge=1, le=1000)
    max_connections: int = Field(default=32, ge=1, le=10_000)
    request_timeout: Seconds = Field(default=60.0, gt=0)
    connect_timeout: Seconds = Field(default=10.0, gt=0)
    upload_timeout: Seconds = Field(default=600.0, gt=0)
    max_retries: int = Field(default=6, ge=0, le=100)
    retry_base_delay: Seconds = Field(default=1.0, gt=0)
    retry_max_delay: Seconds = Field(default=60.0, gt=0)
    give_up_after: Duration = timedelta(days=2)
    # Seconds a cancel waits for its tuning job to end (Vertex cancels asynchronously) before the canceller
    # leaves the job in `cancelling` and tries again when its lease runs out.
    cancel_wait: Seconds = Field(default=30.0, gt=0, le=3600)
    # Polling (poll.* applies too). Vertex AI jobs run for tens of minutes to hours: once a job's step rate is
    # known, the plan aims at its estimated finish and waits up to this long (poll.max_interval, if higher)
    # rather than poll.max_interval; this bounds how late a job that stalls or fails while far from its finish
    # is noticed.
    poll_max_interval_with_rate: Seconds = Field(default=1800.0, gt=0, le=86_400)
    # While the service reports no step count (the job waits for quota or capacity, or processes the dataset:
    # minutes to hours, and nothing can succeed before it is over), the first wait of the back-off, which then
    # grows 1.5x up to poll.max_interval (poll.min_interval, if higher).
    poll_interval_before_steps: Seconds = Field(default=30.0, gt=0, le=3600)

    def __hash__(self) -> int:
        # Settings stay hashable, as frozen models are, although labels is a dict.
        return hash(tuple(tuple(sorted(v.items())) if isinstance(v, dict) else v for v in self.__dict__.values()))

    @model_validator(mode="before")
    @classmethod
    def _derive_base_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("base_url"):
            location = data.get("location", VERTEX_DEFAULT_LOCATION)
            if isinstance(location, str):
                return {**data, "base_url": vertex_base_url(location)}
        return data

    @field_validator("project")
    @classmethod
    def _project(cls, project: str) -> str:
        if project and not (_PROJECT_ID.fullmatch(project) or _PROJECT_NUMBER.fullmatch(project)):
            raise ValueError(
                "must be a project id (6 to 30 lowercase letters, digits and '-', starting with a letter, not "
                "ending with '-') or a project number"
            )
        return project

    @field_validator("location")
    @classmethod
    def _location(cls, location: str) -> str:
        if location != "global" and location not in _MULTI_REGIONS and not _REGION.fullmatch(location):
            raise ValueError("must be a region such as us-central1 or europe-west4, or global, us or eu")
        return location

    @field_validator("base_url", "storage_url")
    @classmethod
    def _http_url(cls, url: str, info: ValidationInfo) -> str:
        url = _http_url_checked(url, info, "vertex")
        if url.endswith(("/v1", "/v1beta1")):
            raise ValueError("must not end with the API version: that is vertex.api_version")
        return url

    @field_validator("credentials_file")
    @classmethod
    def _path(cls, path: str) -> str:
        if "\0" in path or "\n" in path:
            raise ValueError("must be a file path")
        return path

    @field_validator("staging_uri")
    @classmethod
    def _gs_uri(cls, uri: str) -> str:
        if not uri:
            return uri
        if not uri.startswith("gs://"):
            raise ValueError("must be gs://bucket or gs://bucket/prefix")
        bucket, _, prefix = uri.removeprefix("gs://").rstrip("/").partition("/")
        problem = _bucket_problem(bucket)
        if problem:
            raise ValueError(f"bucket {bucket!r} is not a valid Cloud Storage bucket name: {problem}")
        if prefix:
            if any(part in ("", ".", "..") for part in prefix.split("/")):
                raise ValueError("the prefix must not have empty, '.' or '..' parts")
            if any(ord(char) < 32 or ord(char) == 127 for char in prefix) or len(prefix.encode()) > 512:
                raise ValueError("the prefix must be at most 512 bytes without control characters")
        return f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"

    @field_validator("default_base_model")
    @classmethod
    def _model_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@/-]*", name):
            raise ValueError("must be a model name such as gemini-2.5-flash or publishers/google/models/...")
        return name

    @field_validator("adapter_size", mode="before")
    @classmethod
    def _adapter_size_forms(cls, value: object) -> object:
        # 4, "4", "four", "adapter_size_four": all ADAPTER_SIZE_FOUR. Anything else stays as given, for the error.
        if isinstance(value, bool) or not isinstance(value, int | str):
            return value
        text = str(value).strip()
        upper = text.upper()
        for candidate in (_ADAPTER_SIZE_NUMBERS.get(text), upper, f"ADAPTER_SIZE_{upper}"):
            if candidate in ADAPTER_SIZES or candidate == "":
                return candidate
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        if len(labels) > MAX_EXTRA_LABELS:
            raise ValueError(f"at most {MAX_EXTRA_LABELS} labels")
        for key, value in labels.items():
            if not _LABEL_KEY.fullmatch(key) or key != key.lower():
                raise ValueError(
                    f"label key {key!r}: 1 to 64 lowercase letters, digits, '_' and '-', starting with a letter"
                )
            if key.startswith(RESERVED_LABEL_PREFIX):
                raise ValueError(f"label key {key!r}: keys starting with {RESERVED_LABEL_PREFIX!r} are the daemon's")
            if not _LABEL_VALUE.fullmatch(value) or value != value.lower():
                raise ValueError(f"label {key!r}: the value must be up to 64 lowercase letters, digits, '_' and '-'")
        return labels

    @field_validator("retry_max_delay")
    @classmethod
    def _not_below_base(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("retry_base_delay")
        if low is not None and value < low:
            raise ValueError(f"must be at least vertex.retry_base_delay ({low})")
        return value

    @field_validator("give_up_after")
    @classmethod
    def _at_least_a_day(cls, value: timedelta) -> timedelta:
        # Real jobs wait for quota and "validate" datasets for many hours: giving up sooner would fail good jobs.
        if not timedelta(days=1) <= value <= timedelta(days=365):
            raise ValueError("must be between 1 day (86400) and 365 days")
        return value


class DaemonSettings(_Section):
    replica_name: str = ""  # defaults to host:pid; names the owner of leases
    # The safety net: how long a worker waits for work when nothing (NOTIFY, a change to the SQLite file, a due
    # time, another worker) has told it of any.
    idle_interval: Seconds = Field(default=10.0, gt=0, le=3600)
    claim_batch: int = Field(default=32, ge=1, le=10_000)
    lease_seconds: Seconds = Field(default=60.0, ge=1, le=86_400)
    max_attempts: int = Field(default=8, ge=1, le=1000)
    retry_base_delay: Seconds = Field(default=5.0, gt=0)
    retry_max_delay: Seconds = Field(default=600.0, gt=0)
    shutdown_grace: Seconds = Field(default=20.0, ge=0, le=3600)
    # The dispatch breaker (daemon/breaker.py): this many creates in a row failing for the service's sake (5xx,
    # no answer) pause dispatching; the first pause lasts breaker_min_wait, each failed probe doubles it up to
    # breaker_max_wait. A refused key (401/403) pauses at once, with the same waits between checks of the key.
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_min_wait: Seconds = Field(default=10.0, gt=0, le=3600)
    breaker_max_wait: Seconds = Field(default=300.0, gt=0, le=86_400)

    @field_validator("breaker_max_wait")
    @classmethod
    def _breaker_not_below_min(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("breaker_min_wait")
        if low is not None and value < low:
            raise ValueError(f"must be at least daemon.breaker_min_wait ({low})")
        return value


class PollSettings(_Section):
    min_interval: Seconds = Field(default=2.0, gt=0)
    max_interval: Seconds = Field(default=60.0, gt=0)
    jitter: float = Field(default=0.1, ge=0, le=0.5)  # share of the interval, both ways
    min_step_seconds: Seconds = Field(default=1.0, ge=0)  # the service's fastest pace; 0 for a sped-up emulator
    # The shortest interval near a job's finish while queued jobs wait for a tuning slot (min_interval if lower).
    quota_min_interval: Seconds = Field(default=0.25, gt=0, le=60)
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
    interval: Duration = timedelta(minutes=5)
    dry_run: bool = False
    max_deletes_per_run: int = Field(default=50, ge=1, le=100_000)
    cancelled_after: Duration = timedelta(0)
    failed_after: Duration = timedelta(0)
    max_age: Duration | None = None  # off unless set
    orphans: bool = True  # models carrying this deployment's mark whose job row is gone
    lease_seconds: Seconds = Field(default=300.0, ge=1)
    # How long after a job ended a create sent for it but never answered may still land: until then, finding
    # nothing of the job's on the service is not final (the purger looks again), and purged_at waits.
    late_create_window: Duration = timedelta(minutes=15)

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0 seconds")
        return value

    @field_validator("cancelled_after", "failed_after", "max_age", "late_create_window")
    @classmethod
    def _not_negative(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(0):
            raise ValueError("must not be negative")
        return value


class DataSettings(_Section):
    """Where the daemon may read training files (`training_file`), and how much `submit` stores in a row."""

    # Absolute directories; a training file is read only from below one of them, never through a symbolic
    # link below it (datasets.DataRoots). Empty: the daemon reads no training files (such jobs are invalid).
    roots: tuple[str, ...] = ()
    # `tunekeeper submit` stores the checked examples in the job's row, as JSON of at most this many bytes.
    max_submit_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)

    @field_validator("roots")
    @classmethod
    def _absolute_directories(cls, roots: tuple[str, ...]) -> tuple[str, ...]:
        found: list[str] = []
        for root in roots:
            if not root.startswith("/") or "\0" in root:
                raise ValueError(f"{root!r} is not an absolute path (each root must start with /)")
            if ".." in root.split("/"):
                raise ValueError(f"{root!r} has a '..' component; give the directory's own path")
            normal = os.path.normpath(root)
            found.append("/" + normal.lstrip("/"))
        return tuple(found)


class EvalSettings(_Section):
    enabled: bool = True
    concurrency: int = Field(default=4, ge=1, le=1000)
    # What one job may ask of the shared key: more pairs, or more characters of inputs in all, make the job
    # `invalid` before it is tuned.
    max_pairs: int = Field(default=500, ge=1, le=100_000)
    max_input_chars: int = Field(default=500_000, ge=1, le=100_000_000)


class HttpSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    # a connection without a complete request (line and headers) this long, from its start or its last answer,
    # is closed
    idle_timeout: float = Field(default=10.0, gt=0, le=3600)

    @field_validator("host")
    @classmethod
    def _names_an_address(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "must name the address to listen on, such as 127.0.0.1 (empty would listen on every interface; "
                "say 0.0.0.0 or :: if that is meant)"
            )
        return value.strip()


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class WebSettings(_Section):
    """The status page: in the daemon's HTTP server ([http]) and served by `tunekeeper web`."""

    enabled: bool = True  # served by the daemon's HTTP server, at base_path
    # Where the page lives behind a reverse proxy ("/tunekeeper"); every link and asset URL starts with it.
    base_path: str = ""
    # Host headers the page answers (names without the port); anything else is refused, against DNS rebinding.
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = LOOPBACK_HOSTS
    # How old the shared snapshot every viewer reads may grow: the database work per second does not grow with
    # the number of open pages.
    refresh_interval: float = Field(default=2.0, ge=0.1, le=3600)
    # Cancel and retry buttons (POST forms guarded by `token`); off: the page is read-only, and refuses them.
    actions: bool = False
    # Or the systemd credential web-token, or TUNEKEEPER_WEB__TOKEN. Checked even when unset: actions need one.
    token: SecretStr = Field(default=SecretStr(""), validate_default=True)
    host: str = "127.0.0.1"  # `tunekeeper web` only
    port: int = Field(default=9465, ge=0, le=65535)  # `tunekeeper web` only

    @field_validator("base_path")
    @classmethod
    def _path_prefix(cls, path: str) -> str:
        path = path.rstrip("/")
        if path and not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", path):
            raise ValueError("must be empty or a path such as /tunekeeper (letters, digits, '.', '_', '~', '-')")
        return path

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _hosts_from_text(cls, value: object) -> object:
        # An environment variable lists them separated by commas: TUNEKEEPER_WEB__ALLOWED_HOSTS=a.example,b
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        if not hosts:
            raise ValueError("must name at least one host")
        for host in hosts:
            if not re.fullmatch(r"[A-Za-z0-9.:_-]+|\[[0-9A-Fa-f:.]+\]", host):
                raise ValueError(f"{host!r} is not a host name or address")
        return tuple(host.lower().strip("[]") for host in hosts)

    @field_validator("token")
    @classmethod
    def _token_for_actions(cls, token: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("actions") and not token.get_secret_value():
            raise ValueError(
                f"is not set, and web.actions = true needs it (or the systemd credential {WEB_TOKEN_CREDENTIAL_NAME})"
            )
        return token


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console", "auto"] = "auto"


class _CredentialSource(PydanticBaseSettingsSource):
    """The API key and the status page's token from systemd's `LoadCredential=gemini-api-key:...` and
    `LoadCredential=web-token:...` ($CREDENTIALS_DIRECTORY)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            return {}
        found: dict[str, Any] = {}
        for section, key, name in (("gemini", "api_key", CREDENTIAL_NAME), ("web", "token", WEB_TOKEN_CREDENTIAL_NAME)):
            path = Path(directory) / name
            if path.is_file():
                found[section] = {key: path.read_text().strip()}
        return found


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEKEEPER_", env_nested_delimiter="__", extra="forbid", frozen=True)

    # The tuning service. In the TOML file a top-level key: before the first [section].
    backend: Literal["gemini", "vertex"] = "gemini"
    database: DatabaseSettings = DatabaseSettings()
    gemini: GeminiSettings = GeminiSettings()
    vertex: VertexSettings = VertexSettings()
    daemon: DaemonSettings = DaemonSettings()
    poll: PollSettings = PollSettings()
    purge: PurgeSettings = PurgeSettings()
    data: DataSettings = DataSettings()
    eval: EvalSettings = EvalSettings()
    http: HttpSettings = HttpSettings()
    web: WebSettings = WebSettings()
    log: LogSettings = LogSettings()

    @property
    def tuning(self) -> GeminiSettings | VertexSettings:
        """The chosen backend's section: its quota and create limits and its default base model."""
        return self.vertex if self.backend == "vertex" else self.gemini

    @property
    def give_up_after(self) -> timedelta | None:
        """How long after its submission a job still tuning is cancelled and failed; None: never (the Gemini API
        runs its jobs in minutes, and has no such setting)."""
        return self.vertex.give_up_after if self.backend == "vertex" else None

    @property
    def poll_max_interval_with_rate(self) -> float:
        """The longest wait between polls once a job's step rate is known: Vertex AI's setting; on the Gemini API
        (jobs of minutes) poll.max_interval, as before the rate is known."""
        return self.vertex.poll_max_interval_with_rate if self.backend == "vertex" else self.poll.max_interval

    @property
    def poll_interval_before_steps(self) -> float:
        """The first wait while the service reports no step count: Vertex AI's setting; the Gemini API reports
        the count from the create on, so poll.min_interval."""
        return self.vertex.poll_interval_before_steps if self.backend == "vertex" else self.poll.min_interval

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
        settings = _FromFile(**overrides)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    except SettingsError as exc:  # an environment variable that should hold JSON (a table such as labels) does not
        raise ConfigError(_unparsable_environment(exc)) from None
    return _with_database_password(settings)


def _with_database_password(settings: Settings) -> Settings:
    """database.url with the password of the systemd credential `database-password` ($CREDENTIALS_DIRECTORY),
    when there is one: the password then lives in no file the service's configuration directory shows."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    path = Path(directory) / DATABASE_PASSWORD_CREDENTIAL if directory else None
    if path is None or not path.exists():
        return settings
    where = f"[LoadCredential={DATABASE_PASSWORD_CREDENTIAL}:...]"
    try:
        password = path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(
            f"config: the systemd credential {DATABASE_PASSWORD_CREDENTIAL} cannot be read ({reason}) {where}"
        ) from None
    url = make_url(settings.database.url)
    if url.get_backend_name() == "sqlite":
        raise ConfigError(
            f"config: the systemd credential {DATABASE_PASSWORD_CREDENTIAL} is given but database.url is a SQLite "
            f"file, which takes no password {where}"
        )
    if url.password is not None:
        raise ConfigError(
            f"config: database.url has a password and the systemd credential {DATABASE_PASSWORD_CREDENTIAL} "
            f"gives one too: keep one of them [file key database.url, or TUNEKEEPER_DATABASE__URL] {where}"
        )
    with_password = url.set(password=password).render_as_string(hide_password=False)
    return settings.model_copy(update={"database": settings.database.model_copy(update={"url": with_password})})


def require_credentials(settings: Settings) -> None:
    """Commands that call the tuning service need what every call to it needs: without it every job would fail
    later (401, 403, 404), so its absence is a configuration error now (ConfigError, one line naming the key and
    where it can come from). For backend "gemini" the API key; for "vertex" the project, the staging bucket and a
    credential (see find_vertex_credentials)."""
    if settings.backend == "vertex":
        vertex = settings.vertex
        if not vertex.project:
            raise ConfigError(
                'config: vertex.project is not set: backend = "vertex" runs tuning jobs in a Google Cloud project '
                "(its id or number) [file key vertex.project, or TUNEKEEPER_VERTEX__PROJECT]"
            )
        if not vertex.staging_uri:
            raise ConfigError(
                'config: vertex.staging_uri is not set: backend = "vertex" uploads training data to Cloud Storage '
                "(gs://bucket/prefix) [file key vertex.staging_uri, or TUNEKEEPER_VERTEX__STAGING_URI]"
            )
        find_vertex_credentials(settings)
        return
    if not settings.gemini.api_key.get_secret_value():
        raise ConfigError(
            "config: gemini.api_key is not set: the Gemini API takes no call without it [file key gemini.api_key, "
            f"or TUNEKEEPER_GEMINI__API_KEY, or the systemd credential {CREDENTIAL_NAME}]"
        )


# The fields each kind of Google credential file needs; a service-account key is the one for a daemon, gcloud's
# `auth application-default login` writes an authorized_user file (accepted from Application Default Credentials).
KEY_FIELDS = {
    "service_account": ("client_email", "private_key", "token_uri"),
    "authorized_user": ("client_id", "client_secret", "refresh_token"),
}
_MAX_KEY_FILE_BYTES = 1 << 20  # a service-account key is about 2.3 KB


@dataclass(frozen=True)
class VertexCredentials:
    """Where the Vertex AI credential is: a JSON file the client reads itself (its content is never kept here)."""

    path: Path
    origin: str  # which setting or convention named it, as error messages say it
    kind: Literal["service_account", "authorized_user"]


def gcloud_adc_file(environ: Mapping[str, str] | None = None) -> Path | None:
    """gcloud's Application Default Credentials file: $CLOUDSDK_CONFIG or ~/.config/gcloud, as google-auth looks.
    The path, whether or not a file is there; None without a home directory."""
    directory = (os.environ if environ is None else environ).get("CLOUDSDK_CONFIG")
    if directory:
        return Path(directory) / "application_default_credentials.json"
    try:
        return Path.home() / ".config" / "gcloud" / "application_default_credentials.json"
    except (RuntimeError, KeyError):  # no home directory
        return None


def find_vertex_credentials(settings: Settings) -> VertexCredentials:
    """The credential Vertex AI calls are made with, checked (a readable JSON key with the fields a token needs).

    First found wins: vertex.credentials_file (file or environment), the systemd credential vertex-service-account
    ($CREDENTIALS_DIRECTORY), GOOGLE_APPLICATION_CREDENTIALS, gcloud's Application Default Credentials file. The
    first two must be service-account keys. Raises ConfigError, one line, naming the source; never the content.
    """
    explicit = settings.vertex.credentials_file
    insecure = settings.vertex.allow_insecure_http
    if explicit:
        where = "[file key vertex.credentials_file, or TUNEKEEPER_VERTEX__CREDENTIALS_FILE]"
        path = Path(explicit).expanduser()
        kind = _check_key_file(path, f"vertex.credentials_file = {explicit!r}", where, ("service_account",), insecure)
        return VertexCredentials(path, "vertex.credentials_file", kind)
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and (Path(directory) / VERTEX_CREDENTIAL_NAME).exists():
        path = Path(directory) / VERTEX_CREDENTIAL_NAME
        origin = f"the systemd credential {VERTEX_CREDENTIAL_NAME}"
        where = f"[LoadCredential={VERTEX_CREDENTIAL_NAME}:...]"
        kind = _check_key_file(path, origin, where, ("service_account",), insecure)
        return VertexCredentials(path, origin, kind)
    named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if named:
        path = Path(named).expanduser()
        origin = "GOOGLE_APPLICATION_CREDENTIALS"
        where = "[Application Default Credentials]"
        kind = _check_key_file(path, f"{origin} = {named!r}", where, tuple(KEY_FIELDS), insecure)
        return VertexCredentials(path, origin, kind)
    adc = gcloud_adc_file()
    if adc is not None and adc.exists():
        origin = "gcloud's application default credentials"
        where = "[gcloud auth application-default login]"
        kind = _check_key_file(adc, f"{origin} {str(adc)!r}", where, tuple(KEY_FIELDS), insecure)
        return VertexCredentials(adc, origin, kind)
    raise ConfigError(
        "config: vertex.credentials_file is not set and no Application Default Credentials were found: Vertex AI "
        "takes no call without a service-account key [file key vertex.credentials_file, or "
        f"TUNEKEEPER_VERTEX__CREDENTIALS_FILE, or the systemd credential {VERTEX_CREDENTIAL_NAME}, or "
        f"GOOGLE_APPLICATION_CREDENTIALS, or {adc or '~/.config/gcloud/application_default_credentials.json'}]"
    )


def _check_key_file(
    path: Path, named: str, where: str, kinds: tuple[str, ...], allow_insecure_http: bool = False
) -> Literal["service_account", "authorized_user"]:
    """The kind of the Google credential file at `path`, or ConfigError. Messages name the file, never its content.
    A service-account key's `token_uri` must be https://, or http:// to loopback (the emulator's), unless
    `allow_insecure_http`: the signed assertion sent there is as good as a token for its hour."""

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"config: {named}: {problem} {where}")

    try:
        if not path.is_file():
            raise bad("not a regular file" if path.exists() else "no such file")
        if path.stat().st_size > _MAX_KEY_FILE_BYTES:
            raise bad("too large for a key file")
        raw = path.read_bytes()
    except OSError as exc:
        raise bad(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("not a JSON key file") from None
    if not isinstance(document, dict):
        raise bad("not a JSON key file (not an object)")
    kind = document.get("type")
    if not isinstance(kind, str) or kind not in kinds:
        wanted = " or ".join(repr(k) for k in kinds)
        found = "missing" if kind is None else repr(kind) if isinstance(kind, str) and kind in KEY_FIELDS else "other"
        raise bad(f"the key's type is {found}, not {wanted}")
    missing = [field for field in KEY_FIELDS[kind] if not isinstance(document.get(field), str) or not document[field]]
    if missing:
        raise bad(f"not a usable {kind} key: missing {', '.join(missing)}")
    if kind == "service_account" and not allow_insecure_http and in_clear_text(document["token_uri"]):
        raise bad(
            "its token_uri is not https:// and not this host's loopback: the signed assertion would travel in "
            "clear text (vertex.allow_insecure_http = true allows it)"
        )
    return "service_account" if kind == "service_account" else "authorized_user"


def default_config_file() -> Path | None:
    """$TUNEKEEPER_CONFIG, else /etc/tunekeeper/tunekeeper.toml when it exists, else none."""
    named = os.environ.get("TUNEKEEPER_CONFIG")
    if named:
        return Path(named)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def _unparsable_environment(exc: SettingsError) -> str:
    """One line for a TUNEKEEPER_* variable that pydantic-settings could not parse as JSON: names, never values."""
    found = re.search(r'field "(\w+)"', str(exc))
    section = found.group(1) if found else ""
    prefix = f"TUNEKEEPER_{section.upper()}"
    model = Settings.model_fields[section].annotation if section in Settings.model_fields else None
    tables = {
        f"{prefix}__{key.upper()}"
        for key, field in (
            model.model_fields.items() if isinstance(model, type) and issubclass(model, BaseModel) else ()
        )
        if get_origin(field.annotation) is dict
    }
    suspects = sorted(
        key for key in os.environ if key.upper() in tables | {prefix} and not _is_json_object(os.environ[key])
    )
    keys = ", ".join(key.removeprefix("TUNEKEEPER_").lower().replace("__", ".") for key in suspects)
    return (
        f"config: {keys or section or 'settings'}: not valid JSON in the environment, where a table is expected: "
        'write tables as JSON objects, e.g. TUNEKEEPER_VERTEX__LABELS=\'{"team": "ml"}\' '
        f"[{', '.join(suspects) or prefix + '*'}]"
    )


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def secrets_in(settings: Settings) -> list[str]:
    """Values that must never reach a log line: the API key, the database password, the status page's token."""
    found = [
        settings.gemini.api_key.get_secret_value(),
        make_url(settings.database.url).password or "",
        settings.web.token.get_secret_value(),
    ]
    return [str(secret) for secret in found if secret]


def _known_keys() -> frozenset[str]:
    """Every key the settings define, `section.key` or top-level."""
    keys: set[str] = set()
    for name, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            keys.update(f"{name}.{key}" for key in model.model_fields)
        else:
            keys.add(name)
    return frozenset(keys)


def _shown(key: str, value: object, error_type: str) -> str:
    """The value an error may show for `key`: only for keys known not to be secret; URLs without passwords.
    An unknown key is often a misspelt secret one, and a section or document holds every key below it."""
    if error_type == "extra_forbidden" or is_secret(key) or key in _UNSHOWN_KEYS:
        return "<hidden>"
    if key in URL_KEYS:
        return repr(display_url(value)) if isinstance(value, str) else "<hidden>"
    known = _known_keys()
    if key in known or any(key.startswith(f"{table}.") for table in known):  # a label of vertex.labels, say
        return repr(value)
    return "<hidden>"


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    env = "TUNEKEEPER_" + "__".join(str(part) for part in error["loc"]).upper()
    shown = _shown(key, error.get("input"), error["type"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    message = error["msg"].removeprefix("Value error, ")
    return f"config: {key} = {shown}: {message} [file key {key}, or {env}]{more}"
