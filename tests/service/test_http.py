"""HealthServer over real loopback HTTP."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from tests.waiting import wait_until
from tunekeeper.config import HttpSettings
from tunekeeper.daemon.http import HealthServer
from tunekeeper.daemon.looplag import LoopLagMonitor
from tunekeeper.daemon.metrics import Metrics
from tunekeeper.exits import EX_CONFIG, EX_UNAVAILABLE, StartupFailed


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
    """The page says that a check failed; what failed (an exception's text may carry a path or a host) goes to
    the log only."""
    checks.error = RuntimeError("database /srv/private/team-a.db is locked")
    with capture_logs() as logs:
        status, body = await get_json(http, server.url + "/readyz")
    assert status == 503
    assert body["checks"] == {"readiness": False}
    assert "team-a" not in str(body) and "locked" not in str(body)
    assert "a readiness check failed" in str(body["error"])
    [logged] = [line for line in logs if line["event"] == "readiness_check_failed"]
    assert "/srv/private/team-a.db is locked" in logged["error"]


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


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """How long the server took to close the connection (EOF or reset); fails after `seconds`."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        try:
            while await reader.read(4096):
                pass
        except ConnectionResetError:
            pass
    return time.monotonic() - started


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"GET /hea", id="half-a-request-line"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", id="headers-never-finished"),
        pytest.param(b"", id="nothing-at-all"),
    ],
)
async def test_a_client_that_never_finishes_its_request_is_disconnected(metrics: Metrics, sent: bytes) -> None:
    """A slow-loris client holds a descriptor only for `idle_timeout`, however little it sends."""
    async with HealthServer("127.0.0.1", 0, metrics, idle_timeout=0.5) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(sent)
            await writer.drain()
            waited = await closed_within(reader, 10.0)
        finally:
            writer.close()
    assert waited < 5.0


async def test_a_trickling_client_is_disconnected_although_it_keeps_sending(metrics: Metrics) -> None:
    async with HealthServer("127.0.0.1", 0, metrics, idle_timeout=0.5) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)

        async def trickle() -> None:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            while True:
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.05)

        sending = asyncio.create_task(trickle())
        try:
            await closed_within(reader, 10.0)
        finally:
            sending.cancel()
            writer.close()


async def test_an_answered_client_gets_its_answer_and_an_idle_one_is_let_go(metrics: Metrics) -> None:
    """The timeout never cuts a request that arrives whole; the kept-alive connection then idles out."""
    async with HealthServer("127.0.0.1", 0, metrics, idle_timeout=0.5) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            await closed_within(reader, 10.0)
        finally:
            writer.close()


def test_the_idle_timeout_comes_from_the_settings(metrics: Metrics) -> None:
    settings = HttpSettings(host="127.0.0.1", port=0, idle_timeout=2.5)
    assert HealthServer.from_settings(settings, metrics).idle_timeout == 2.5
    assert HttpSettings().idle_timeout == 10.0


async def test_a_taken_port_is_one_line_and_a_status_a_restart_may_cure(metrics: Metrics) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupFailed) as refused:
            await HealthServer("127.0.0.1", port, metrics).start()
    assert (
        str(refused.value) == f"http: cannot listen on 127.0.0.1:{port}: address already in use (http.host, http.port)"
    )
    assert refused.value.status == EX_UNAVAILABLE


async def test_an_address_that_is_not_this_hosts_is_a_configuration_error(metrics: Metrics) -> None:
    with pytest.raises(StartupFailed) as refused:
        await HealthServer("192.0.2.1", 0, metrics).start()  # TEST-NET-1: never a local address
    assert "http: cannot listen on 192.0.2.1:0" in str(refused.value)
    assert refused.value.status == EX_CONFIG


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
async def test_listening_beyond_loopback_is_a_warning(metrics: Metrics, host: str) -> None:
    if host == "::" and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    with capture_logs() as logs:
        async with HealthServer(host, 0, metrics):
            pass
    [warning] = [line for line in logs if line["event"] == "http_not_loopback"]
    assert warning["log_level"] == "warning"
    assert warning["host"] == host


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
async def test_loopback_raises_no_warning(metrics: Metrics, host: str) -> None:
    with capture_logs() as logs:
        try:
            async with HealthServer(host, 0, metrics):
                pass
        except StartupFailed:
            pytest.skip(f"{host} cannot be bound here")
    assert [line for line in logs if line["event"] == "http_not_loopback"] == []
