"""The daemon's own small HTTP server: /healthz, /readyz and /metrics (127.0.0.1 by default).

- /healthz answers 200 whenever the event loop runs: the handler running at all is the proof. It also shows the
  latest event-loop lag once the lag monitor has measured it.
- /readyz asks the injected readiness callback for named checks (database reachable, scheduler running, ...):
  200 when every check passes, 503 otherwise, each check listed in the body.
- /metrics is the Prometheus text exposition of the daemon's own registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from tunekeeper.config import HttpSettings
from tunekeeper.daemon.metrics import Metrics
from tunekeeper.logs import get_logger

log = get_logger(__name__)

Readiness = Callable[[], Awaitable[Mapping[str, bool]]]
"""Returns named checks, e.g. {"database": True, "scheduler": True}; the daemon is ready when all are true."""


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
        about: Mapping[str, Any] | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.metrics = metrics
        self.readiness = readiness
        self.readiness_timeout = readiness_timeout
        self.about = dict(about or {})  # who answers: shown by /healthz, read by `tunekeeper status`
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @classmethod
    def from_settings(
        cls,
        settings: HttpSettings,
        metrics: Metrics,
        readiness: Readiness | None = None,
        about: Mapping[str, Any] | None = None,
    ) -> HealthServer:
        return cls(settings.host, settings.port, metrics, readiness, about=about)

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
        # No access log: probes and scrapes every few seconds would drown the daemon's own log lines.
        # A short shutdown timeout: a scraper's idle keep-alive connection must not hold up the daemon's exit.
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._requested_port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("http_listening", host=self.host, port=self._port)

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
                error = repr(exc)
        self.metrics.readiness(checks)
        return checks, error

    async def _metrics(self, request: web.Request) -> web.Response:
        # Readiness is evaluated at each scrape, so that an alert on tunekeeper_ready sees what /readyz would say.
        await self._readiness_checks()
        return web.Response(body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type})
