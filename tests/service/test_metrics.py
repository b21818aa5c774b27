"""Metrics: a registry per daemon, named after what happened."""

from __future__ import annotations

import platform

from prometheus_client.parser import text_string_to_metric_families

from tunekeeper import __version__
from tunekeeper.backends.googleapi.observer import RequestObserver
from tunekeeper.daemon.metrics import CONTENT_TYPE, JOB_STATES, Metrics


def values(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


def test_job_counts_default_missing_states_to_zero() -> None:
    metrics = Metrics()
    metrics.set_job_counts({"queued": 3, "tuning": 1})
    metrics.set_job_counts({"tuning": 2})
    seen = values(metrics)
    assert {state: seen[("tunekeeper_jobs", (("state", state),))] for state in JOB_STATES} == {
        "queued": 0,
        "submitting": 0,
        "tuning": 2,
        "succeeded": 0,
        "failed": 0,
        "invalid": 0,
        "cancelling": 0,
        "cancelled": 0,
    }


def test_every_legal_transition_is_exported_from_the_start() -> None:
    seen = values(Metrics())
    claimed = (("from_state", "queued"), ("to_state", "submitting"), ("transition", "claimed"))
    assert seen[("tunekeeper_job_transitions_total", claimed)] == 0
    elsewhere = (("from_state", "tuning"), ("to_state", "cancelled"), ("transition", "cancelled_elsewhere"))
    assert seen[("tunekeeper_job_transitions_total", elsewhere)] == 0


def test_instances_do_not_share_counters() -> None:
    first, second = Metrics(), Metrics()
    first.transition("accepted", "submitting", "tuning")
    accepted = (("from_state", "submitting"), ("to_state", "tuning"), ("transition", "accepted"))
    assert values(first)[("tunekeeper_job_transitions_total", accepted)] == 1
    assert values(second)[("tunekeeper_job_transitions_total", accepted)] == 0


def test_poll_lag_and_loop_lag() -> None:
    metrics = Metrics()
    metrics.poll_lag(1.5)
    metrics.poll_lag(-0.01)  # a poll made early counts as on time
    metrics.event_loop_lag(0.004, recent_p99=0.02)
    seen = values(metrics)
    assert seen[("tunekeeper_poll_lag_seconds_count", ())] == 2
    assert seen[("tunekeeper_poll_lag_seconds_sum", ())] == 1.5
    assert seen[("tunekeeper_event_loop_lag_seconds_count", ())] == 1
    assert seen[("tunekeeper_event_loop_lag_recent_p99_seconds", ())] == 0.02
    assert metrics.loop_lag is not None
    assert metrics.loop_lag.last == 0.004


def test_retries_record_the_delay() -> None:
    metrics = Metrics()
    metrics.retry_scheduled("tunedModels.create", "429", 2.0)
    seen = values(metrics)
    assert seen[("tunekeeper_api_retries_total", (("route", "tunedModels.create"), ("status", "429")))] == 1
    assert seen[("tunekeeper_api_retry_delay_seconds_sum", (("route", "tunedModels.create"),))] == 2.0


def test_build_info_and_process_metrics() -> None:
    seen = values(Metrics())
    assert seen[("tunekeeper_build_info", (("python", platform.python_version()), ("version", __version__)))] == 1
    assert seen[("process_resident_memory_bytes", ())] > 0
    assert ("process_resident_memory_bytes", ()) not in values(Metrics(process_metrics=False))


def test_content_type() -> None:
    assert Metrics().content_type == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_metrics_is_the_clients_request_observer() -> None:
    observer: RequestObserver = Metrics()  # checked by mypy: the protocol and these methods must agree
    observer.request_finished("tunedModels.create", "connection_error", 0.01)
    observer.retry_scheduled("tunedModels.create", "connection_error", 0.5)
