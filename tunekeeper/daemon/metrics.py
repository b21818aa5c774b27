"""Prometheus metrics of one daemon, in a registry of its own.

No metric touches prometheus_client's global default registry, so several daemons (tests, benchmarks) can live
in one process without "duplicated timeseries" errors or counters bleeding into each other. Methods are named
after what happened; `request_finished` and `retry_scheduled` are the tuning-service client's observer protocol.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from tunekeeper import __version__
from tunekeeper.daemon.looplag import BUSY_INTERVAL, IDLE_INTERVAL, WINDOW
from tunekeeper.states import EDGES, State

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of `Metrics.render()`: Prometheus text exposition format 0.0.4."""

JOB_STATES: tuple[str, ...] = tuple(state.value for state in State)
DISPATCH_PAUSE_REASONS = ("service_unavailable", "credentials")  # daemon/breaker.py's PauseReason
PURGE_OUTCOMES = ("finished", "skipped", "failed")
JOB_COUNT_INTERVAL = 5.0
"""How often the service recounts the jobs by state (on SQLite only after a commit: see Service)."""

_API_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_RETRY_DELAY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_POLL_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class LoopLag:
    """The latest event-loop lag measurement and the p99 of the recent window, in seconds."""

    last: float
    recent_p99: float


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, process_metrics: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.loop_lag: LoopLag | None = None  # None until the first measurement
        self._longest_write_lock = 0.0

        self._jobs = Gauge(
            "tunekeeper_jobs",
            f"Jobs in the database by state; recounted every {JOB_COUNT_INTERVAL:g} s (on SQLite only after a"
            " commit to the file).",
            ["state"],
            registry=r,
        )
        self._transitions = Counter(
            "tunekeeper_job_transitions",
            "Job state changes made by this daemon.",
            ["transition", "from_state", "to_state"],
            registry=r,
        )
        self._api_requests = Counter(
            "tunekeeper_api_requests",
            "Finished tuning-service requests by route and outcome (HTTP status or error kind).",
            ["route", "status"],
            registry=r,
        )
        self._api_seconds = Histogram(
            "tunekeeper_api_request_seconds",
            "Duration of tuning-service requests (each attempt).",
            ["route"],
            buckets=_API_SECONDS_BUCKETS,
            registry=r,
        )
        self._api_retries = Counter(
            "tunekeeper_api_retries",
            "Tuning-service requests retried, by route and the status that caused the retry.",
            ["route", "status"],
            registry=r,
        )
        self._api_retry_delay = Histogram(
            "tunekeeper_api_retry_delay_seconds",
            "Back-off delay before a retried tuning-service request.",
            ["route"],
            buckets=_RETRY_DELAY_BUCKETS,
            registry=r,
        )
        self._poll_lag = Histogram(
            "tunekeeper_poll_lag_seconds",
            "How long after its due time an operation poll was actually made.",
            buckets=_POLL_LAG_BUCKETS,
            registry=r,
        )
        self._purged = Counter(
            "tunekeeper_purge_deletions",
            "Tuned models deleted (or, in dry-run, that would have been) by the purger, by policy.",
            ["policy", "dry_run"],
            registry=r,
        )
        self._loop_lag = Histogram(
            "tunekeeper_event_loop_lag_seconds",
            f"How late the event loop woke from a scheduled sleep; sampled every {BUSY_INTERVAL:g} s while jobs"
            f" are being handled, every {IDLE_INTERVAL:g} s otherwise.",
            buckets=_LOOP_LAG_BUCKETS,
            registry=r,
        )
        self._loop_lag_p99 = Gauge(
            "tunekeeper_event_loop_lag_recent_p99_seconds",
            f"99th percentile of event-loop lag over the last {WINDOW} samples.",
            registry=r,
        )
        self._dispatch_paused = Gauge(
            "tunekeeper_dispatch_paused",
            "1 while dispatching is paused, by reason: service_unavailable (the breaker is open after creates"
            " failed in a row) or credentials (the service refuses the key).",
            ["reason"],
            registry=r,
        )
        self._dispatch_pauses = Counter(
            "tunekeeper_dispatch_pauses",
            "Times dispatching was paused, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in DISPATCH_PAUSE_REASONS:
            self._dispatch_paused.labels(reason=reason).set(0)
            self._dispatch_pauses.labels(reason=reason)
        self._oldest = Gauge(
            "tunekeeper_oldest_job_timestamp_seconds",
            "When the longest-waiting job of each unfinished state entered it (queued: created; submitting and"
            " cancelling: last changed; tuning: submitted), as a Unix time; absent when no job is in the state.",
            ["state"],
            registry=r,
        )
        self._max_active = Gauge(
            "tunekeeper_max_active_jobs",
            "The tuning slots this daemon may fill (max_active_jobs of the active backend).",
            registry=r,
        )
        self._ready = Gauge(
            "tunekeeper_ready",
            "1 when /readyz would answer ready, else 0; evaluated at each scrape.",
            registry=r,
        )
        self._readiness_checks = Gauge(
            "tunekeeper_readiness_check",
            "Each readiness check at the last scrape: 1 passing, 0 failing.",
            ["check"],
            registry=r,
        )
        self._purge_runs = Counter(
            "tunekeeper_purge_runs",
            "Scheduled purge passes by outcome: finished, skipped (another replica holds the purge), failed.",
            ["outcome"],
            registry=r,
        )
        self._purge_last_success = Gauge(
            "tunekeeper_purge_last_success_timestamp_seconds",
            "When a scheduled purge pass last finished, as a Unix time (0: not yet).",
            registry=r,
        )
        self._write_lock = Histogram(
            "tunekeeper_sqlite_write_lock_seconds",
            "SQLite: how long each of the daemon's write transactions held the database's write lock (from BEGIN"
            " IMMEDIATE to its end); a producer's INSERT waits at most this long with a busy timeout.",
            buckets=_LOOP_LAG_BUCKETS,
            registry=r,
        )
        self._write_lock_longest = Gauge(
            "tunekeeper_sqlite_write_lock_longest_seconds",
            "SQLite: the longest the daemon has held the write lock since it started.",
            registry=r,
        )
        self._claim_failures = Counter(
            "tunekeeper_worker_claim_failures",
            "Claims of a worker that failed (the database unavailable, or anything else); each is retried with"
            " back-off.",
            ["worker"],
            registry=r,
        )
        Info("tunekeeper_build", "Version of the running daemon.", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )

        self._job_states: dict[str, None] = dict.fromkeys(JOB_STATES)  # ordered set; grows with unknown states
        for state in JOB_STATES:
            self._jobs.labels(state=state).set(0)
        # Every legal edge starts at 0, so rate() and increase() work from the first scrape.
        for transition, (sources, to) in EDGES.items():
            for source in sources:
                self._transitions.labels(transition=transition.value, from_state=source.value, to_state=to.value)

        for outcome in PURGE_OUTCOMES:
            self._purge_runs.labels(outcome=outcome)

        if process_metrics:
            _ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    # The tuning-service client's observer protocol.
    def request_finished(self, route: str, status: str, seconds: float) -> None:
        self._api_requests.labels(route=route, status=status).inc()
        self._api_seconds.labels(route=route).observe(seconds)

    def retry_scheduled(self, route: str, status: str, delay: float) -> None:
        self._api_retries.labels(route=route, status=status).inc()
        self._api_retry_delay.labels(route=route).observe(delay)

    def dispatch_paused(self, reason: str, paused: bool) -> None:
        self._dispatch_paused.labels(reason=reason).set(1 if paused else 0)
        if paused:
            self._dispatch_pauses.labels(reason=reason).inc()

    def transition(self, name: str, from_state: str, to_state: str) -> None:
        self._transitions.labels(transition=name, from_state=from_state, to_state=to_state).inc()

    def write_lock_held(self, seconds: float) -> None:
        self._write_lock.observe(seconds)
        if seconds > self._longest_write_lock:
            self._longest_write_lock = seconds
            self._write_lock_longest.set(seconds)

    def claim_failed(self, worker: str) -> None:
        self._claim_failures.labels(worker=worker).inc()

    def poll_lag(self, seconds: float) -> None:
        self._poll_lag.observe(max(0.0, seconds))

    def purged(self, policy: str, dry_run: bool) -> None:
        self._purged.labels(policy=policy, dry_run="true" if dry_run else "false").inc()

    def set_job_counts(self, counts: Mapping[str, int]) -> None:
        """Replace the per-state job counts; a known state missing from `counts` has no jobs."""
        self._job_states.update(dict.fromkeys(counts))
        for state in self._job_states:
            self._jobs.labels(state=state).set(counts.get(state, 0))

    def set_oldest_jobs(self, since: Mapping[str, float]) -> None:
        """Replace the per-state oldest-job times (Unix seconds); a state missing from `since` has no job."""
        self._oldest.clear()
        for state, timestamp in since.items():
            self._oldest.labels(state=state).set(timestamp)

    def set_max_active_jobs(self, slots: int) -> None:
        self._max_active.set(slots)

    def readiness(self, checks: Mapping[str, bool]) -> None:
        self._readiness_checks.clear()
        for check, ok in checks.items():
            self._readiness_checks.labels(check=check).set(1 if ok else 0)
        self._ready.set(1 if all(checks.values()) else 0)

    def purge_run(self, outcome: str) -> None:
        self._purge_runs.labels(outcome=outcome).inc()
        if outcome == "finished":
            self._purge_last_success.set_to_current_time()

    def event_loop_lag(self, seconds: float, recent_p99: float) -> None:
        self._loop_lag.observe(seconds)
        self._loop_lag_p99.set(recent_p99)
        self.loop_lag = LoopLag(last=seconds, recent_p99=recent_p99)

    def render(self) -> bytes:
        """All metrics in the Prometheus text format (media type `CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    content_type = CONTENT_TYPE


class _ProcessCollector(ProcessCollector):
    """process_* metrics that survive systemd's ProcSubset=pid.

    The stock collector needs the boot time from /proc/stat, which ProcSubset=pid hides, and then reports
    nothing at all. The boot time also follows from the wall clock minus CLOCK_BOOTTIME.
    """

    def _boot_time(self) -> float:
        try:
            btime = super()._boot_time()  # type: ignore[no-untyped-call]
        except OSError:
            btime = None
        return float(btime) if btime else time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
