"""Running the real daemon as a subprocess against the emulator, for tests that need a whole process.

`DaemonProcess` starts `python -m tunekeeper run` with its settings in TUNEKEEPER_* variables (as an operator
would), keeps its stdout and stderr in files, and parses the JSON log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.waiting import wait_until

TEST_API_KEY = "test-key-9d3f0c2b7a"

# Timings that make a daemon react in tens of milliseconds, so tests finish quickly.
FAST_SETTINGS: dict[str, str] = {
    "TUNEKEEPER_DAEMON__IDLE_INTERVAL": "0.1",
    "TUNEKEEPER_DAEMON__LEASE_SECONDS": "3",
    "TUNEKEEPER_DAEMON__RETRY_BASE_DELAY": "0.05",
    "TUNEKEEPER_DAEMON__RETRY_MAX_DELAY": "0.5",
    "TUNEKEEPER_DAEMON__SHUTDOWN_GRACE": "5",
    "TUNEKEEPER_POLL__MIN_INTERVAL": "0.1",
    "TUNEKEEPER_POLL__MAX_INTERVAL": "1",
    "TUNEKEEPER_POLL__MIN_STEP_SECONDS": "0",
    "TUNEKEEPER_GEMINI__RETRY_BASE_DELAY": "0.01",
    "TUNEKEEPER_GEMINI__RETRY_MAX_DELAY": "0.2",
    "TUNEKEEPER_GEMINI__MAX_RETRIES": "8",
    "TUNEKEEPER_GEMINI__CREATES_PER_MINUTE": "6000",
    "TUNEKEEPER_GEMINI__REQUESTS_PER_MINUTE": "600000",
    "TUNEKEEPER_HTTP__PORT": "0",
    "TUNEKEEPER_LOG__FORMAT": "json",
    "TUNEKEEPER_LOG__LEVEL": "info",
}


def daemon_environment(database_url: str, base_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment for a daemon: ours minus any TUNEKEEPER_* or systemd variables, plus settings."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TUNEKEEPER_") and key not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    }
    return {
        **inherited,
        **FAST_SETTINGS,
        "TUNEKEEPER_DATABASE__URL": database_url,
        "TUNEKEEPER_GEMINI__BASE_URL": base_url,
        "TUNEKEEPER_GEMINI__API_KEY": TEST_API_KEY,
        **(extra or {}),
    }


class DaemonProcess:
    def __init__(self, directory: Path, env: Mapping[str, str], *, name: str = "daemon") -> None:
        self.directory = directory
        self.env = dict(env)
        self.name = name
        self.stdout_path = directory / f"{name}.stdout"
        self.stderr_path = directory / f"{name}.stderr"
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self, *, wait_ready: bool = True, within: float = 20.0) -> None:
        """Start (or restart) the daemon; its output is appended to the same files."""
        self.starts += 1
        with self.stdout_path.open("ab") as stdout, self.stderr_path.open("ab") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tunekeeper", "run", env=self.env, stdout=stdout, stderr=stderr
            )
        if wait_ready:
            starts = self.starts
            await wait_until(
                lambda: self._started_count() >= starts or self._exited(),
                within=within,
                message=f"{self.name} to log daemon_started",
            )
            if self._exited():
                raise AssertionError(f"{self.name} exited at start-up:\n{self.stderr_text()}\n{self.stdout_text()}")

    async def stop(self, sig: signal.Signals = signal.SIGTERM, within: float = 30.0) -> int:
        """Send `sig` and wait for the exit status."""
        assert self.process is not None
        self.signal(sig)
        async with asyncio.timeout(within):
            return await self.process.wait()

    async def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        await self.stop(signal.SIGKILL)

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` with os.kill, not Process.send_signal: subprocess.Popen.send_signal polls first, and a poll
        that reaps a process exiting at that moment leaves asyncio's child watcher with nothing to wait for (it
        then reports exit status 255 for a process that exited 0)."""
        assert self.process is not None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped by the watcher: a zombie
                os.kill(self.process.pid, sig)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        """Every stdout line parsed as JSON (a line that is not JSON fails the test). While the daemon runs, a last
        line without its newline may be still being written: it is left for a later read."""
        text = self.stdout_text()
        if self.running:
            text = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("event") == name]

    async def wait_for_events(
        self, name: str, where: Callable[[dict[str, Any]], bool] = lambda line: True, *, within: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait until the log has a `name` line for which `where` holds; every such line so far.

        The daemon logs what it did after doing it (a state change after its commit, say), and the line reaches
        the file a moment later: a test that saw the effect in the database waits for the line itself."""

        def found() -> list[dict[str, Any]]:
            return [line for line in self.events(name) if where(line)]

        return await wait_until(found, within=within, message=f"a {name} line in {self.name}'s log")

    def _started_count(self) -> int:
        return self.stdout_text().count('"event": "daemon_started"')

    def _exited(self) -> bool:
        return self.process is not None and self.process.returncode is not None

    async def __aenter__(self) -> DaemonProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.running:
            self.signal(signal.SIGKILL)
            assert self.process is not None
            await self.process.wait()
