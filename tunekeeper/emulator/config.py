"""EmulatorConfig and the parsers for the command line's `--faults` and `--latency` values."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Fault kinds, in the order a single uniform draw is compared against their cumulative rates.
# "503-after" and "drop-after" let the request take effect first (the "response lost" case).
FAULT_KINDS: tuple[str, ...] = ("429", "500", "503", "drop", "503-after", "drop-after")
PRE_FAULTS = frozenset({"429", "500", "503", "drop"})
POST_FAULTS = frozenset({"503-after", "drop-after"})

DEFAULT_BASE_MODELS: frozenset[str] = frozenset({"models/gemini-1.5-flash-001-tuning", "models/gemini-1.0-pro-001"})
# Vertex AI's base models open for supervised tuning (a current list; `vertex_base_models` changes it).
DEFAULT_VERTEX_BASE_MODELS: frozenset[str] = frozenset(
    {"gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro", "gemini-2.0-flash-001"}
)
# What a Vertex AI tuning job create beyond `max_active_tuning` meets: 429 RESOURCE_EXHAUSTED ("reject"), or a
# job that waits in WAITING_FOR_QUOTA until a slot frees ("wait"). Google does not say which; clients cope with both.
QUOTA_MODES = ("reject", "wait")
DEFAULT_PROJECT = "emulator-project"  # the project of the service account a key file is made for by default
# Google's rule for project ids: 6-30 characters, lowercase letters, digits and hyphens, starting with a letter.
_PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


def validate_faults(faults: Mapping[str, float]) -> dict[str, float]:
    """Check kinds and rates; the rates are shares of one draw, so together they may not exceed 1."""
    checked: dict[str, float] = {}
    for kind, rate in faults.items():
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        value = float(rate)
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise ValueError(f"fault rate for {kind} must be between 0 and 1, got {rate!r}")
        checked[kind] = value
    if sum(checked.values()) > 1.0 + 1e-9:
        raise ValueError(f"fault rates add up to {sum(checked.values()):.3f}, more than 1")
    return checked


def validate_latency(latency: tuple[float, float] | None) -> tuple[float, float] | None:
    if latency is None:
        return None
    low, high = float(latency[0]), float(latency[1])
    if not 0.0 <= low <= high:
        raise ValueError(f"latency range must satisfy 0 <= low <= high, got {low}..{high}")
    return (low, high)


def validate_rate(name: str, value: float) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return number


def validate_positive(name: str, value: float) -> float:
    number = float(value)
    if not number > 0.0 or math.isinf(number):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return number


def validate_non_negative(name: str, value: float) -> float:
    number = float(value)
    if not number >= 0.0 or math.isinf(number):
        raise ValueError(f"{name} must be zero or more, got {value!r}")
    return number


def validate_optional_limit(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return value


def validate_bucket_name(name: str) -> str:
    if _BUCKET_NAME.fullmatch(name) is None or ".." in name:
        raise ValueError(
            f"bucket name {name!r} is not valid: 3-222 characters of lowercase letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit"
        )
    return name


def validate_project_id(project: str) -> str:
    if _PROJECT_ID.fullmatch(project) is None:
        raise ValueError(
            f"project id {project!r} is not valid: 6-30 lowercase letters, digits and hyphens, "
            "starting with a letter and not ending with a hyphen"
        )
    return project


@dataclass(frozen=True)
class EmulatorConfig:
    """How an Emulator starts. The tuning speed, failures, faults, latency and limits can also be changed at run
    time (`Emulator.configure`, `POST /emulator/faults`); the rest is fixed for the emulator's life."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, see Emulator.base_url
    api_keys: frozenset[str] = frozenset()  # empty: any key or token is accepted
    step_seconds: float = 0.1  # simulated time per tuning step
    fail_rate: float = 0.0  # share of tuning jobs that end in FAILED
    diverge_rate: float = 0.0  # share of Gemini API tuning jobs whose loss diverges: "NaN" after the first epoch
    nul_rate: float = 0.0  # share of Gemini API generateContent answers whose text ends in U+0000
    faults: Mapping[str, float] = field(default_factory=dict)  # kind (FAULT_KINDS) -> share of requests
    latency: tuple[float, float] | None = None  # added delay per request, uniform in [low, high] seconds
    retry_delay: float = 0.05  # RetryInfo.retryDelay of injected 429s, in seconds
    max_active_tuning: int | None = None  # concurrent models in CREATING; None: unlimited
    requests_per_minute: int | None = None  # API requests per sliding minute; None: unlimited
    seed: int = 0  # makes ids, faults, latency, failures and losses reproducible
    log_requests: bool = True  # one JSON log line per API request
    base_models: frozenset[str] = DEFAULT_BASE_MODELS  # Gemini API base models open for tuning
    vertex_base_models: frozenset[str] = DEFAULT_VERTEX_BASE_MODELS  # Vertex AI base models open for tuning
    quota_mode: str = "reject"  # QUOTA_MODES: what a Vertex AI create beyond max_active_tuning meets
    buckets: frozenset[str] = frozenset()  # the Cloud Storage buckets that exist
    token_lifetime: float = 3600.0  # seconds an issued OAuth access token is valid
    # Cloud Storage routes accept requests without a token (clients under STORAGE_EMULATOR_HOST send none);
    # a token that is sent must still be valid.
    anonymous_storage: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "faults", MappingProxyType(validate_faults(self.faults)))
        object.__setattr__(self, "latency", validate_latency(self.latency))
        object.__setattr__(self, "api_keys", frozenset(self.api_keys))
        object.__setattr__(self, "base_models", frozenset(self.base_models))
        object.__setattr__(self, "vertex_base_models", frozenset(self.vertex_base_models))
        object.__setattr__(self, "buckets", frozenset(self.buckets))
        for bucket in self.buckets:
            validate_bucket_name(bucket)
        if self.quota_mode not in QUOTA_MODES:
            raise ValueError(f"quota_mode must be one of {', '.join(QUOTA_MODES)}, got {self.quota_mode!r}")
        validate_positive("token_lifetime", self.token_lifetime)
        validate_positive("step_seconds", self.step_seconds)
        validate_rate("fail_rate", self.fail_rate)
        validate_rate("diverge_rate", self.diverge_rate)
        validate_rate("nul_rate", self.nul_rate)
        validate_non_negative("retry_delay", self.retry_delay)
        validate_optional_limit("max_active_tuning", self.max_active_tuning)
        validate_optional_limit("requests_per_minute", self.requests_per_minute)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")


_DURATION = re.compile(r"^\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>us|µs|ms|s|)\s*$")
_UNIT_SECONDS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "": 1.0}


def parse_duration(text: str) -> float:
    """`"50ms"`, `"0.2s"`, `"1"` (seconds), `"500us"` -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (examples: 5ms, 0.2s, 1)")
    return float(match["number"]) * _UNIT_SECONDS[match["unit"]]


def parse_latency(text: str) -> tuple[float, float] | None:
    """`"5ms..50ms"` -> (0.005, 0.05); `"20ms"` -> a fixed delay; `"0"` or `"none"` -> None."""
    if text.strip().lower() in {"", "0", "none", "off"}:
        return None
    low_text, separator, high_text = text.partition("..")
    low = parse_duration(low_text)
    high = parse_duration(high_text) if separator else low
    return validate_latency((low, high))


def parse_faults(text: str) -> dict[str, float]:
    """`"429=0.1,503=0.05,drop-after=0.01"` -> {"429": 0.1, "503": 0.05, "drop-after": 0.01}."""
    faults: dict[str, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        kind, separator, rate = item.partition("=")
        if not separator:
            raise ValueError(f"fault {item.strip()!r} is not KIND=RATE (example: 429=0.1)")
        try:
            faults[kind.strip()] = float(rate)
        except ValueError:
            raise ValueError(f"fault rate {rate.strip()!r} for {kind.strip()} is not a number") from None
    return validate_faults(faults)
