"""SIGHUP as systemd sends it (`systemctl reload`): at any moment of the process's life, never fatal, and
never a reason for the purge to wait longer."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.harness import DaemonProcess, daemon_environment
from tests.waiting import wait_until
from tunekeeper.emulator import Emulator


def ignores_sighup(pid: int) -> bool:
    """Whether the process has set SIGHUP to be ignored (bit 0 of SigIgn in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


async def test_sighup_during_start_up_and_shutdown_is_not_fatal(
    sqlite_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    daemon = DaemonProcess(tmp_path, daemon_environment(sqlite_url, emulator.base_url))
    await daemon.start(wait_ready=False)
    assert daemon.process is not None
    pid = daemon.process.pid
    try:
        await wait_until(lambda: not daemon.running or ignores_sighup(pid), message="SIGHUP to be ignored")
        sent = 0

        def hup() -> None:
            nonlocal sent
            if daemon.running:
                daemon.signal(signal.SIGHUP)
                sent += 1

        # A storm of reloads through the whole start-up, until the daemon says it is ready.
        async def started() -> bool:
            hup()
            return bool(daemon.events("daemon_started")) or not daemon.running

        await wait_until(started, within=30, interval=0.01, message="daemon_started under SIGHUPs")
        assert daemon.running, daemon.stderr_text()
        assert sent >= 3

        # And through the whole shutdown, until the process has gone.
        daemon.signal(signal.SIGTERM)

        async def exited() -> bool:
            hup()
            await asyncio.sleep(0)
            return not daemon.running

        await wait_until(exited, within=30, interval=0.005, message="the daemon to exit under SIGHUPs")
        assert daemon.process.returncode == 0, daemon.stderr_text()
        assert daemon.events("daemon_stopped"), "the shutdown ran to its end"
    finally:
        if daemon.running:
            await daemon.kill()


async def test_reloads_more_often_than_the_purge_interval_do_not_postpone_it(
    sqlite_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    config = tmp_path / "tunekeeper.toml"
    config.write_text("[purge]\ninterval = 2\n")
    env = daemon_environment(sqlite_url, emulator.base_url, {"TUNEKEEPER_CONFIG": str(config)})
    async with DaemonProcess(tmp_path, env) as daemon:

        async def purged_while_reloading() -> bool:
            daemon.signal(signal.SIGHUP)
            return bool(daemon.events("purge_finished"))

        # A reload every 0.3 s, each of which used to restart the 2 s interval.
        await wait_until(purged_while_reloading, within=15, interval=0.3, message="a purge run despite reloads")
        reloads_before = [
            line["event"] for line in daemon.log_lines() if line.get("event") in ("config_reloaded", "purge_finished")
        ]
        assert reloads_before.index("purge_finished") >= 3, reloads_before

        # A changed interval applies, and is not later than the run already due.
        config.write_text("[purge]\ninterval = 1\n")
        runs = len(daemon.events("purge_finished"))
        daemon.signal(signal.SIGHUP)
        await wait_until(
            lambda: len(daemon.events("purge_finished")) >= runs + 2, within=10, message="runs at the new interval"
        )
