"""HealthServer over real loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.waiting import wait_until
from tunekeeper.config import HttpSettings
from tunekeeper.daemon.http import HealthServer
from tunekeeper.daemon.looplag import LoopLagMonitor
from tunekeeper.daemon.metrics import Metrics


class Checks:
    """A readiness callback whose answers the test controls."""

    def __init__(self) -> None:
        self.results: dict[str, bool] = {"database": True, "scheduler": True}
        self.error: Exception | None = None
        self.delay = 0.0
        self.calls = 0

    async def __call__(self) -> dict[str, bool]:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return dict(self.results)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def checks() -> Checks:
    return Checks()


@pytest.fixture
async def server(metrics: Metrics, checks: Checks) -> AsyncIterator[HealthServer]:
    async with HealthServer("127.0.0.1", 0, metrics, checks, readiness_timeout=0.5) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def test_binds_a_free_port_on_loopback(server: HealthServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


async def test_healthz(server: HealthServer, http: aiohttp.ClientSession) -> None:
    assert await get_json(http, server.url + "/healthz") == (200, {"status": "ok"})


async def test_healthz_shows_loop_lag_once_measured(
    server: HealthServer, http: aiohttp.ClientSession, metrics: Metrics
) -> None:
    monitor = LoopLagMonitor(metrics, interval=0.01)
    task = asyncio.create_task(monitor.run())
    try:
        await wait_until(lambda: monitor.measured >= 3, within=5.0, message="lag samples")
        status, body = await get_json(http, server.url + "/healthz")
    finally:
        task.cancel()
    assert status == 200
    assert body["status"] == "ok"
    assert isinstance(body["loop_lag_seconds"], float)
    assert isinstance(body["loop_lag_recent_p99_seconds"], float)


async def test_readyz_when_every_check_passes(server: HealthServer, http: aiohttp.ClientSession) -> None:
    status, body = await get_json(http, server.url + "/readyz")
    assert status == 200
    assert body == {"status": "ready", "checks": {"database": True, "scheduler": True}}


async def test_readyz_is_503_when_a_check_fails(
    server: HealthServer, http: aiohttp.ClientSession, checks: Checks
) -> None:
    checks.results["database"] = False
    status, body = await get_json(http, server.url + "/readyz")
    assert status == 503
    assert body == {"status": "not ready", "checks": {"database": False, "scheduler": True}}

    checks.results["database"] = True
    assert (await get_json(http, server.url + "/readyz"))[0] == 200


async def test_readyz_is_503_when_the_callback_raises(
    server: HealthServer, http: aiohttp.ClientSession, checks: Checks
) -> None:
    checks.error = RuntimeError("database is locked")
    status, body = await get_json(http, server.url + "/readyz")
    assert status == 503
    assert body["checks"] == {"readiness": False}
    assert "database is locked" in str(body["error"])


async def test_readyz_is_503_when_the_callback_hangs(
    server: HealthServer, http: aiohttp.ClientSession, checks: Checks
) -> None:
    checks.delay = 30.0
    status, body = await get_json(http, server.url + "/readyz")
    assert status == 503
    assert "longer than 0.5s" in str(body["error"])


async def test_readyz_without_checks_is_ready(metrics: Metrics, http: aiohttp.ClientSession) -> None:
    async with HealthServer("127.0.0.1", 0, metrics) as server:
        assert await get_json(http, server.url + "/readyz") == (200, {"status": "ready", "checks": {}})


async def test_metrics_parse_and_count(server: HealthServer, http: aiohttp.ClientSession, metrics: Metrics) -> None:
    metrics.request_finished("tunedModels.create", "200", 0.2)
    metrics.request_finished("tunedModels.create", "200", 0.4)
    metrics.request_finished("operations.get", "503", 0.1)
    metrics.retry_scheduled("operations.get", "503", 1.5)
    metrics.transition("claimed", "queued", "submitting")
    metrics.purged("failed", dry_run=True)
    metrics.poll_lag(0.3)
    metrics.set_job_counts({"queued": 7, "tuning": 2})

    async with http.get(server.url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("tunekeeper_api_requests_total", (("route", "tunedModels.create"), ("status", "200")))] == 2
    assert samples[("tunekeeper_api_requests_total", (("route", "operations.get"), ("status", "503")))] == 1
    assert samples[("tunekeeper_api_request_seconds_count", (("route", "tunedModels.create"),))] == 2
    assert samples[("tunekeeper_api_request_seconds_sum", (("route", "tunedModels.create"),))] == pytest.approx(0.6)
    assert samples[("tunekeeper_api_retries_total", (("route", "operations.get"), ("status", "503")))] == 1
    transition = (("from_state", "queued"), ("to_state", "submitting"), ("transition", "claimed"))
    assert samples[("tunekeeper_job_transitions_total", transition)] == 1
    assert samples[("tunekeeper_purge_deletions_total", (("dry_run", "true"), ("policy", "failed")))] == 1
    assert samples[("tunekeeper_poll_lag_seconds_count", ())] == 1
    assert samples[("tunekeeper_jobs", (("state", "queued"),))] == 7
    assert samples[("tunekeeper_jobs", (("state", "tuning"),))] == 2
    assert samples[("tunekeeper_jobs", (("state", "failed"),))] == 0
    assert any(name == "tunekeeper_build_info" for name, _ in samples)


def scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_each_scrape_records_readiness(server: HealthServer, http: aiohttp.ClientSession, checks: Checks) -> None:
    """An alert on tunekeeper_ready sees what /readyz would say at that moment, probed or not."""
    async with http.get(server.url + "/metrics") as response:
        samples = scraped(await response.text())
    assert samples[("tunekeeper_ready", ())] == 1
    assert samples[("tunekeeper_readiness_check", (("check", "database"),))] == 1

    checks.results["database"] = False
    async with http.get(server.url + "/metrics") as response:
        samples = scraped(await response.text())
    assert samples[("tunekeeper_ready", ())] == 0
    assert samples[("tunekeeper_readiness_check", (("check", "database"),))] == 0
    assert samples[("tunekeeper_readiness_check", (("check", "scheduler"),))] == 1

    checks.error = RuntimeError("boom")
    async with http.get(server.url + "/metrics") as response:
        samples = scraped(await response.text())
    assert samples[("tunekeeper_ready", ())] == 0
    assert ("tunekeeper_readiness_check", (("check", "database"),)) not in samples, "only the checks that ran"


async def test_purge_runs_and_slots_are_exported(
    server: HealthServer, http: aiohttp.ClientSession, metrics: Metrics
) -> None:
    metrics.purge_run("failed")
    metrics.purge_run("finished")
    metrics.set_max_active_jobs(4)
    metrics.set_oldest_jobs({"tuning": 1_700_000_000.0})
    async with http.get(server.url + "/metrics") as response:
        samples = scraped(await response.text())
    assert samples[("tunekeeper_purge_runs_total", (("outcome", "failed"),))] == 1
    assert samples[("tunekeeper_purge_runs_total", (("outcome", "skipped"),))] == 0
    assert samples[("tunekeeper_purge_last_success_timestamp_seconds", ())] > 1_700_000_000
    assert samples[("tunekeeper_max_active_jobs", ())] == 4
    assert samples[("tunekeeper_oldest_job_timestamp_seconds", (("state", "tuning"),))] == 1_700_000_000

    metrics.set_oldest_jobs({})
    async with http.get(server.url + "/metrics") as response:
        samples = scraped(await response.text())
    assert ("tunekeeper_oldest_job_timestamp_seconds", (("state", "tuning"),)) not in samples


async def test_unknown_path_is_404(server: HealthServer, http: aiohttp.ClientSession) -> None:
    async with http.get(server.url + "/nope") as response:
        assert response.status == 404


async def test_two_servers_in_one_process_keep_their_own_metrics(http: aiohttp.ClientSession) -> None:
    first, second = Metrics(), Metrics()
    first.purged("orphan", dry_run=False)
    async with HealthServer("127.0.0.1", 0, first) as a, HealthServer("127.0.0.1", 0, second) as b:
        assert a.port != b.port
        async with http.get(a.url + "/metrics") as response:
            assert 'tunekeeper_purge_deletions_total{dry_run="false",policy="orphan"} 1.0' in await response.text()
        async with http.get(b.url + "/metrics") as response:
            assert "tunekeeper_purge_deletions_total{" not in await response.text()


async def test_stop_closes_the_port(metrics: Metrics, http: aiohttp.ClientSession) -> None:
    async with HealthServer("127.0.0.1", 0, metrics) as server:
        url = server.url + "/healthz"
        assert (await get_json(http, url))[0] == 200
    with pytest.raises(RuntimeError):
        _ = server.port
    with pytest.raises(aiohttp.ClientConnectionError):
        await get_json(http, url)


async def test_from_settings(metrics: Metrics) -> None:
    async with HealthServer.from_settings(HttpSettings(host="127.0.0.1", port=0), metrics) as server:
        assert server.host == "127.0.0.1"
        assert server.port > 0
