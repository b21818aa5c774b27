"""The daemon's own small HTTP server: /healthz, /readyz and /metrics (127.0.0.1 by default).

- /healthz answers 200 whenever the event loop runs: the handler running at all is the proof. It also shows the
  latest event-loop lag once the lag monitor has measured it.
- /readyz asks the injected readiness callback for named checks (database reachable, scheduler running, ...):
  200 when every check passes, 503 otherwise, each check listed in the body.
- /metrics is the Prometheus text exposition of the daemon's own registry.

Anyone on the host may reach the port, so a connection that has not sent a complete request (line and headers)
within `idle_timeout` seconds, from its start or since its last answer, is closed: a client that sends half a
request and waits holds no descriptor for long. (aiohttp's keep-alive timer does this: it runs from the
connection's start and closes it while no whole request has arrived.) Readiness errors are logged, not shown.
Other pages mount beside these (`mounts`: the status page, at `web.base_path`).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from aiohttp import web

from tunekeeper.config import HttpSettings
from tunekeeper.daemon.metrics import Metrics
from tunekeeper.exits import EX_CONFIG, EX_UNAVAILABLE, StartupFailed
from tunekeeper.logs import get_logger

log = get_logger(__name__)

Readiness = Callable[[], Awaitable[Mapping[str, bool]]]
"""Returns named checks, e.g. {"database": True, "scheduler": True}; the daemon is ready when all are true."""
Mount = Callable[[web.Application], None]
"""Adds routes (and their clean-up) to the server's application."""


class HealthServer:
    """`async with HealthServer(host, port, metrics, readiness) as server:` serves until the block ends.

    Port 0 binds a free port; `server.port` is the bound one.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        readiness: Readiness | None = None,
        *,
        readiness_timeout: float = 5.0,
        idle_timeout: float = 10.0,
        about: Mapping[str, Any] | None = None,
        mounts: Sequence[Mount] = (),
    ) -> None:
        self.host = host
        self._requested_port = port
        self.metrics = metrics
        self.readiness = readiness
        self.readiness_timeout = readiness_timeout
        self.idle_timeout = idle_timeout
        self.about = dict(about or {})  # who answers: shown by /healthz, read by `tunekeeper status`
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        for mount in mounts:
            mount(self.app)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @classmethod
    def from_settings(
        cls,
        settings: HttpSettings,
        metrics: Metrics,
        readiness: Readiness | None = None,
        about: Mapping[str, Any] | None = None,
        mounts: Sequence[Mount] = (),
    ) -> HealthServer:
        return cls(
            settings.host,
            settings.port,
            metrics,
            readiness,
            idle_timeout=settings.idle_timeout,
            about=about,
            mounts=mounts,
        )

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("HealthServer is not running")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen; StartupFailed (one line, an exit status) if the address cannot be had."""
        # No access log: probes and scrapes every few seconds would drown the daemon's own log lines.
        # A short shutdown timeout: a scraper's idle keep-alive connection must not hold up the daemon's exit.
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=2.0,
            keepalive_timeout=self.idle_timeout,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._requested_port).start()
        except OSError as exc:
            await runner.cleanup()
            raise self._listen_failure(exc) from exc
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("http_listening", host=self.host, port=self._port)
        if not _is_loopback(self.host):
            log.warning("http_not_loopback", host=self.host, port=self._port)

    def _listen_failure(self, error: OSError) -> StartupFailed:
        # A port in use may be freed (an old daemon still stopping); any other refusal is the settings'.
        taken = error.errno == errno.EADDRINUSE
        reason = "address already in use" if taken else (error.strerror or str(error))
        return StartupFailed(
            f"http: cannot listen on {self.host}:{self._requested_port}: {reason} (http.host, http.port)",
            problem="http_listen",
            status=EX_UNAVAILABLE if taken else EX_CONFIG,
        )

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._port = None

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _healthz(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {"status": "ok", **self.about}
        lag = self.metrics.loop_lag
        if lag is not None:
            body["loop_lag_seconds"] = round(lag.last, 6)
            body["loop_lag_recent_p99_seconds"] = round(lag.recent_p99, 6)
        return web.json_response(body)

    async def _readyz(self, request: web.Request) -> web.Response:
        checks, error = await self._readiness_checks()
        ready = all(checks.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
        if error is not None:
            body["error"] = error
        return web.json_response(body, status=200 if ready else 503)

    async def _readiness_checks(self) -> tuple[dict[str, bool], str | None]:
        """The named checks and, when they could not be run, why; the metrics record the outcome too."""
        checks: dict[str, bool] = {}
        error: str | None = None
        if self.readiness is not None:
            try:
                async with asyncio.timeout(self.readiness_timeout):
                    checks = {str(name): bool(ok) for name, ok in (await self.readiness()).items()}
            except TimeoutError:
                checks = {"readiness": False}
                error = f"readiness checks took longer than {self.readiness_timeout}s"
            except Exception as exc:
                log.warning("readiness_check_failed", error=repr(exc))
                checks = {"readiness": False}
                error = "a readiness check failed (the daemon's log has the details)"
        self.metrics.readiness(checks)
        return checks, error

    async def _metrics(self, request: web.Request) -> web.Response:
        # Readiness is evaluated at each scrape, so that an alert on tunekeeper_ready sees what /readyz would say.
        await self._readiness_checks()
        return web.Response(body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type})


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False
