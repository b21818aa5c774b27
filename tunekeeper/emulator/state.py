"""Everything one emulator holds: run-time settings, the model store, the fault injector and the counters."""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunekeeper.emulator.config import (
    EmulatorConfig,
    validate_faults,
    validate_latency,
    validate_non_negative,
    validate_optional_limit,
    validate_positive,
    validate_rate,
)
from tunekeeper.emulator.faults import FaultInjector, RequestLimiter
from tunekeeper.emulator.gemini.models import ModelStore, TuningOptions
from tunekeeper.emulator.oauth.accounts import ServiceAccounts
from tunekeeper.emulator.oauth.tokens import TokenRegistry
from tunekeeper.emulator.stats import RequestStats
from tunekeeper.emulator.storage.objects import ObjectStore
from tunekeeper.emulator.vertex.deployments import Deployments
from tunekeeper.emulator.vertex.jobs import TuningJobStore


class Unset(enum.Enum):
    """Marks a keyword argument that was not given (None is a meaningful value for the limits)."""

    UNSET = enum.auto()


UNSET = Unset.UNSET


@dataclass(slots=True)
class RuntimeSettings:
    step_seconds: float
    fail_rate: float
    diverge_rate: float
    nul_rate: float
    retry_delay: float
    max_active_tuning: int | None
    requests_per_minute: int | None
    # Every credential refused, as after a key's revocation: API keys get 403, tokens 401, the token endpoint
    # invalid_grant. Turned off again, the same keys and key files work as before.
    credentials_revoked: bool = False


class EmulatorState:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.api_keys = config.api_keys
        self.log_requests = config.log_requests
        self.settings = RuntimeSettings(
            step_seconds=config.step_seconds,
            fail_rate=config.fail_rate,
            diverge_rate=config.diverge_rate,
            nul_rate=config.nul_rate,
            retry_delay=config.retry_delay,
            max_active_tuning=config.max_active_tuning,
            requests_per_minute=config.requests_per_minute,
        )
        self.store = ModelStore(config.seed, config.base_models)  # the Gemini API's tuned models
        self.storage = ObjectStore(config.buckets)
        self.tokens = TokenRegistry(config.token_lifetime)
        self.service_accounts = ServiceAccounts()  # whose signed assertions the token endpoint accepts
        self.deployments = Deployments(config.seed)  # Vertex AI's tuned models and endpoints
        # Vertex AI tuning jobs: a quota pool of their own, apart from the Gemini API's models.
        self.vertex = TuningJobStore(config.seed, self.settings, config.quota_mode, self.deployments)
        self.faults = FaultInjector(config.seed, config.faults, config.latency)
        self.limiter = RequestLimiter(config.requests_per_minute)
        self.stats = RequestStats()
        self.started_at = time.time()
        self._nul_rng = random.Random(f"{config.seed}:nul")

    def tuning_options(self) -> TuningOptions:
        settings = self.settings
        return TuningOptions(
            settings.step_seconds, settings.fail_rate, settings.max_active_tuning, settings.diverge_rate
        )

    def configure(
        self,
        *,
        faults: Mapping[str, float] | Unset = UNSET,
        replace_faults: bool = False,
        latency: tuple[float, float] | Unset | None = UNSET,
        retry_delay: float | Unset = UNSET,
        fail_rate: float | Unset = UNSET,
        diverge_rate: float | Unset = UNSET,
        nul_rate: float | Unset = UNSET,
        step_seconds: float | Unset = UNSET,
        max_active_tuning: int | Unset | None = UNSET,
        requests_per_minute: int | Unset | None = UNSET,
        credentials_revoked: bool | Unset = UNSET,
    ) -> None:
        """Change run-time settings. Everything is validated before anything changes (ValueError)."""
        new_faults = None
        if not isinstance(faults, Unset):
            merged = dict(faults) if replace_faults else {**self.faults.faults, **faults}
            new_faults = validate_faults(merged)
        new_latency = self.faults.latency if isinstance(latency, Unset) else validate_latency(latency)
        settings = self.settings
        new_retry = settings.retry_delay
        if not isinstance(retry_delay, Unset):
            new_retry = validate_non_negative("retry_delay", retry_delay)
        new_fail = settings.fail_rate if isinstance(fail_rate, Unset) else validate_rate("fail_rate", fail_rate)
        new_diverge = settings.diverge_rate
        if not isinstance(diverge_rate, Unset):
            new_diverge = validate_rate("diverge_rate", diverge_rate)
        new_nul = settings.nul_rate if isinstance(nul_rate, Unset) else validate_rate("nul_rate", nul_rate)
        new_step = settings.step_seconds
        if not isinstance(step_seconds, Unset):
            new_step = validate_positive("step_seconds", step_seconds)
        new_max = settings.max_active_tuning
        if not isinstance(max_active_tuning, Unset):
            new_max = validate_optional_limit("max_active_tuning", max_active_tuning)
        new_rpm = settings.requests_per_minute
        if not isinstance(requests_per_minute, Unset):
            new_rpm = validate_optional_limit("requests_per_minute", requests_per_minute)
        new_revoked = settings.credentials_revoked
        if not isinstance(credentials_revoked, Unset):
            if not isinstance(credentials_revoked, bool):
                raise ValueError(f"credentials_revoked must be true or false, got {credentials_revoked!r}")
            new_revoked = credentials_revoked

        now = time.time()
        self.vertex.advance(now)  # what happened up to now happened under the old settings
        if new_faults is not None:
            self.faults.set_faults(new_faults)
        self.faults.latency = new_latency
        settings.retry_delay = new_retry
        settings.fail_rate = new_fail
        settings.diverge_rate = new_diverge
        settings.nul_rate = new_nul
        if new_step != settings.step_seconds:
            settings.step_seconds = new_step
            self.store.rescale(new_step, now)  # models already tuning continue at the new speed
            self.vertex.rescale(new_step, now)
        settings.max_active_tuning = new_max
        self.vertex.advance(now)  # a raised limit hands free slots to waiting jobs now
        settings.requests_per_minute = new_rpm
        self.limiter.limit = new_rpm
        settings.credentials_revoked = new_revoked

    def with_nul(self, text: str) -> str:
        """`text`, ending in U+0000 for a share `nul_rate` of answers (drawn only while the rate is set)."""
        rate = self.settings.nul_rate
        return text + "\x00" if rate > 0 and self._nul_rng.random() < rate else text

    def reset(self) -> None:
        """Forget models, objects, tokens and counters and restart the seeded generators; settings stay, and so
        do the service accounts (a key file handed out stays valid)."""
        self.store.reset()
        self.storage.reset()
        self.tokens.reset()
        self.deployments.reset()
        self.vertex.reset()
        self.faults.reseed()
        self.limiter.reset()
        self.stats.reset()

    def settings_json(self) -> dict[str, Any]:
        settings = self.settings
        latency = self.faults.latency
        return {
            "faults": dict(self.faults.faults),
            "latency": list(latency) if latency is not None else None,
            "retry_delay": settings.retry_delay,
            "fail_rate": settings.fail_rate,
            "diverge_rate": settings.diverge_rate,
            "nul_rate": settings.nul_rate,
            "step_seconds": settings.step_seconds,
            "max_active_tuning": settings.max_active_tuning,
            "requests_per_minute": settings.requests_per_minute,
            "credentials_revoked": settings.credentials_revoked,
            "seed": self.config.seed,
        }

    def stats_json(self) -> dict[str, Any]:
        now = time.time()
        stats = self.stats.snapshot()
        current = self.store.tuning_count(now)
        timelines = self.store.timelines(now)
        operation_gets = self.stats.operation_gets
        by_model = stats["creates"]["by_model"]
        models: dict[str, dict[str, Any]] = {}
        for model_id, timeline in timelines.items():
            counts = by_model.get(model_id, {"attempted": 0, "accepted": 0})
            models[model_id] = {
                **timeline,
                "operation_gets": operation_gets[model_id],
                "creates_attempted": counts["attempted"],
                "creates_accepted": counts["accepted"],
            }
        vertex_active, vertex_waiting = self.vertex.counts(now)
        tuning_gets = self.stats.tuning_job_gets
        tuning_jobs = {
            name: {**timeline, "gets": tuning_gets[name]} for name, timeline in self.vertex.timelines(now).items()
        }
        return {
            "now": now,
            "started_at": self.started_at,
            **stats,
            "current_tuning": current,
            "max_concurrent_tuning": self.store.max_concurrent_tuning,
            "models": models,
            "current_vertex_tuning": vertex_active,
            "waiting_vertex_tuning": vertex_waiting,
            "max_concurrent_vertex_tuning": self.vertex.max_concurrent,
            "tuning_jobs": tuning_jobs,
            "storage": self.storage.summary(),
            "deployments": self.deployments.summary(),
            "settings": self.settings_json(),
        }
