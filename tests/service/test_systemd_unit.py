"""The shipped systemd unit: required directives, `systemd-analyze verify`, its exposure score, and W^X."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tunekeeper.config import DaemonSettings

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "tunekeeper.service"
SHIPPED_EXEC = "/opt/tunekeeper/venv/bin/tunekeeper"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def directives(text: str) -> dict[str, list[str]]:
    """Key -> every value it is given (keys such as SystemCallFilter= may repeat), section names prefixed."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def test_the_unit_has_the_required_directives() -> None:
    unit = directives(UNIT.read_text())
    required = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": f"{SHIPPED_EXEC} run --config /etc/tunekeeper/tunekeeper.toml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "WatchdogSec": "30",
        "Restart": "on-failure",
        "StateDirectory": "tunekeeper",
        "ConfigurationDirectory": "tunekeeper",
        "LoadCredential": "gemini-api-key:/etc/tunekeeper/gemini-api-key",
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "ProtectProc": "invisible",
        "ProcSubset": "pid",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "UMask": "0077",
        "PrivateUsers": "yes",
        "RemoveIPC": "yes",
        "DevicePolicy": "closed",
    }
    assert {key: unit.get(f"Service.{key}") for key in required} == {key: [value] for key, value in required.items()}
    assert unit["Service.SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def test_the_unit_bounds_memory_well_above_what_the_daemon_uses() -> None:
    unit = directives(UNIT.read_text())
    megabytes = {"M": 1, "G": 1024}
    [high], [limit] = unit["Service.MemoryHigh"], unit["Service.MemoryMax"]
    high_mb, limit_mb = (int(value[:-1]) * megabytes[value[-1]] for value in (high, limit))
    # about 100 MB in the benchmarks, plus a large job's data loaded (up to 256 MB on disk) with room to spare
    assert 1024 <= high_mb < limit_mb <= 8192


def test_the_unit_keeps_secrets_out_of_the_environment() -> None:
    unit = directives(UNIT.read_text())
    environment = " ".join(unit.get("Service.Environment", []))
    assert not re.search(r"(?i)key|token|secret|password", environment)
    assert "Service.EnvironmentFile" not in unit


def test_stop_timeout_outlasts_the_shutdown_grace() -> None:
    unit = directives(UNIT.read_text())
    [stop_timeout] = unit["Service.TimeoutStopSec"]
    assert float(stop_timeout) > DaemonSettings().shutdown_grace
    [restart_sec] = unit["Service.RestartSec"]
    assert float(restart_sec) > 0


def _verify(unit_file: Path) -> list[str]:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit_file)], capture_output=True, text=True, timeout=60, check=False
    )
    # Complaints about unrelated units on the host are not ours to judge; anything about this one is.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "tunekeeper" in line]
    assert result.returncode == 0, result.stderr
    return ours


@needs_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists the ExecStart binary exists: point a copy of the unit at this venv's script.
    script = Path(sys.executable).parent / "tunekeeper"
    executable = script if script.is_file() else Path("/bin/true")
    copy = tmp_path / "tunekeeper.service"
    copy.write_text(UNIT.read_text().replace(f"ExecStart={SHIPPED_EXEC}", f"ExecStart={executable}"))
    assert f"ExecStart={executable} run" in copy.read_text()
    assert _verify(copy) == []


@needs_analyze
@pytest.mark.skipif(not Path(SHIPPED_EXEC).is_file(), reason=f"{SHIPPED_EXEC} is not installed on this machine")
def test_systemd_analyze_verify_shipped_unit() -> None:
    assert _verify(UNIT) == []


@needs_analyze
def test_exposure_score_is_at_most_2() -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip(f"this systemd-analyze cannot score unit files offline: {result.stderr.strip()}")
    match = re.search(r"Overall exposure level for tunekeeper\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


def test_the_daemon_runs_without_writable_executable_memory(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes: the interpreter and every compiled dependency must cope.

    The kernel's PR_SET_MDWE (Linux 6.3+, kept across execve) refuses W+X mappings like systemd's filter does.
    """
    child = textwrap.dedent(
        """
        import asyncio, mmap, ssl
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            raise SystemExit("W+X mapping was allowed: the restriction is not in force")
        except PermissionError:
            pass

        import aiohttp, aiosqlite, alembic, apscheduler, asyncpg, pydantic, pydantic_settings, structlog
        from aiohttp import web
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine
        import tunekeeper.config, tunekeeper.daemon.http, tunekeeper.daemon.looplag, tunekeeper.daemon.notify
        from tunekeeper.daemon.http import HealthServer
        from tunekeeper.daemon.metrics import Metrics

        async def main(db):
            ssl.create_default_context()
            engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
            async with engine.begin() as conn:
                assert (await conn.execute(text("select 41 + 1"))).scalar() == 42
            await engine.dispose()
            async with HealthServer("127.0.0.1", 0, Metrics()) as server, aiohttp.ClientSession() as http:
                async with http.get(server.url + "/metrics") as response:
                    assert response.status == 200
            print("ok")

        import sys
        asyncio.run(main(sys.argv[1]))
        """
    )
    launcher = textwrap.dedent(
        """
        import ctypes, os, sys
        PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
        libc = ctypes.CDLL(None, use_errno=True)
        args = [ctypes.c_ulong(v) for v in (PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0)]
        if libc.prctl(ctypes.c_int(PR_SET_MDWE), *args) != 0:
            print("unsupported", os.strerror(ctypes.get_errno()))
            raise SystemExit(0)
        os.execv(sys.executable, [sys.executable, "-c", sys.argv[1], sys.argv[2]])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", launcher, child, str(tmp_path / "wx.db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.stdout.startswith("unsupported"):
        pytest.skip(f"kernel lacks PR_SET_MDWE: {result.stdout.strip()}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "ok"
