"""Emulator: the server's life cycle and its Python control surface (the same operations as `/emulator/*`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from aiohttp import web

from tunekeeper.emulator.app import create_app
from tunekeeper.emulator.config import DEFAULT_PROJECT, EmulatorConfig
from tunekeeper.emulator.oauth.accounts import write_key_file
from tunekeeper.emulator.state import UNSET, EmulatorState, Unset

_log = structlog.get_logger("tunekeeper.emulator")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Emulator:
    """A running emulator. `async with Emulator(config) as emu:` serves on `emu.base_url` inside the block."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.state = EmulatorState(self.config)
        self.app = create_app(self.state)
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """`http://HOST:PORT` with the port actually bound (port 0 in the config picks a free one)."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not running")
        return self._base_url

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        if not is_loopback(self.config.host):
            # The emulator is for tests: whoever reaches the address can drive it, and without keys it takes any.
            _log.warning("emulator_exposed", host=self.config.host, api_keys=len(self.config.api_keys))
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown_host = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{shown_host}:{port}"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        self._base_url = None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def stats(self) -> dict[str, Any]:
        """The same dict as `GET /emulator/stats`."""
        return self.state.stats_json()

    def set_faults(self, faults: Mapping[str, float], *, replace: bool = False) -> None:
        """Set fault rates by kind; other kinds keep their rates unless `replace`. ValueError if invalid."""
        self.state.configure(faults=faults, replace_faults=replace)

    def configure(
        self,
        *,
        step_seconds: float | Unset = UNSET,
        fail_rate: float | Unset = UNSET,
        diverge_rate: float | Unset = UNSET,
        nul_rate: float | Unset = UNSET,
        max_active_tuning: int | Unset | None = UNSET,
        requests_per_minute: int | Unset | None = UNSET,
        latency: tuple[float, float] | Unset | None = UNSET,
        retry_delay: float | Unset = UNSET,
        faults: Mapping[str, float] | Unset = UNSET,
        credentials_revoked: bool | Unset = UNSET,
    ) -> None:
        """Change run-time settings; only the arguments given change. ValueError if any is invalid.

        A new `step_seconds` also applies to models already tuning, from their current progress on.
        """
        self.state.configure(
            step_seconds=step_seconds,
            fail_rate=fail_rate,
            diverge_rate=diverge_rate,
            nul_rate=nul_rate,
            max_active_tuning=max_active_tuning,
            requests_per_minute=requests_per_minute,
            latency=latency,
            retry_delay=retry_delay,
            faults=faults,
            credentials_revoked=credentials_revoked,
        )

    def reset(self) -> None:
        """Forget all models and counters and restart the seeded generators (settings stay)."""
        self.state.reset()

    def service_account_info(self, project: str = DEFAULT_PROJECT) -> dict[str, Any]:
        """A service-account key file's content (as Google's console downloads it) whose `token_uri` is this
        emulator's token endpoint: `google.oauth2.service_account.Credentials.from_service_account_info(...)`.

        The same project gets the same account and key for the emulator's life, resets included. The private
        key is generated locally at first use (once per emulator); it is no real credential.
        """
        return self.state.service_accounts.key_file(self.base_url, project)

    def write_service_account_file(self, path: str | Path, project: str = DEFAULT_PROJECT) -> Path:
        """Write `service_account_info(project)` to `path` (mode 0600, replacing it atomically); the path."""
        return write_key_file(path, self.service_account_info(project))
