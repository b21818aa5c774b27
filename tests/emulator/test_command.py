"""`tunekeeper emulator` as a real process: prints its URL, serves, logs JSON lines, exits 0 on a signal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET_KEY = "cmd-secret-key-123"


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tunekeeper",
        "emulator",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.fixture
async def command() -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    process = await start("--port", "0", "--api-key", SECRET_KEY, "--step-seconds", "10ms", "--seed", "3")
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        url = line.decode().strip()
        assert url.startswith("http://127.0.0.1:"), line
        yield process, url
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serves_logs_and_exits_cleanly(
    command: tuple[asyncio.subprocess.Process, str], signum: signal.Signals
) -> None:
    process, url = command
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v1beta/tunedModels", params={"key": SECRET_KEY}) as response:
            assert response.status == 200
        async with session.get(f"{url}/v1beta/tunedModels", headers={"x-goog-api-key": "wrong"}) as response:
            assert response.status == 403
        async with session.get(f"{url}/emulator/health") as response:
            assert await response.json() == {"status": "ok"}
    process.send_signal(signum)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert SECRET_KEY.encode() not in stdout + stderr
    lines = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    requests = [line for line in lines if line.get("event") == "request"]
    assert [(line["route"], line["status"]) for line in requests] == [
        ("tunedModels.list", "200"),
        ("tunedModels.list", "403"),
    ]
    assert all(line["path"] == "/v1beta/tunedModels" for line in requests)


async def test_quiet_logs_no_requests() -> None:
    process = await start("--port", "0", "--quiet")
    assert process.stdout is not None
    try:
        url = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode().strip()
        async with aiohttp.ClientSession() as session, session.get(f"{url}/v1beta/tunedModels?key=k") as response:
            assert response.status == 200
        process.terminate()
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0
        assert stdout == b""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_bad_arguments_are_a_usage_error() -> None:
    process = await start("--faults", "429=2")
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert (process.returncode, stdout) == (2, b"")
    assert b"fault rate for 429 must be between 0 and 1" in stderr


async def test_keys_from_a_file_and_the_environment_guard_the_control_routes_and_stay_out_of_ps(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("file-key-456\n\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tunekeeper",
        "emulator",
        "--port",
        "0",
        "--quiet",
        "--api-key-file",
        str(key_file),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TUNEKEEPER_EMULATOR_API_KEYS": "env-key-789"},
    )
    assert process.stdout is not None
    try:
        url = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode().strip()
        command_line = await asyncio.to_thread(Path(f"/proc/{process.pid}/cmdline").read_bytes)
        assert b"file-key-456" not in command_line and b"env-key-789" not in command_line
        async with aiohttp.ClientSession() as session:
            for key, api, control in ((None, 401, 401), ("wrong", 403, 403), ("file-key-456", 200, 200)):
                headers = {"x-goog-api-key": key} if key else {}
                async with session.get(f"{url}/v1beta/tunedModels", headers=headers) as response:
                    assert response.status == api, key
                async with session.get(f"{url}/emulator/stats", headers=headers) as response:
                    assert response.status == control, key
                async with session.post(
                    f"{url}/emulator/faults", headers=headers, json={"faults": {"503": 1.0}}
                ) as response:
                    assert response.status == control, key
            bearer = {"Authorization": "Bearer env-key-789"}
            async with session.post(f"{url}/emulator/reset", headers=bearer) as response:
                assert response.status == 200
            async with session.get(f"{url}/emulator/health") as response:  # a probe needs no key
                assert response.status == 200
        process.terminate()
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, stderr.decode()
        assert b"file-key-456" not in stdout + stderr and b"env-key-789" not in stdout + stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_host_other_than_loopback_is_warned_about() -> None:
    # 192.0.2.1 (TEST-NET-1) is nobody's address: the warning comes before the bind, which then fails.
    process = await start("--host", "192.0.2.1", "--port", "0")
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 1
    assert b"cannot listen on 192.0.2.1" in stderr
    [warning] = [json.loads(line) for line in stdout.decode().splitlines() if "emulator_exposed" in line]
    assert (warning["level"], warning["host"], warning["api_keys"]) == ("warning", "192.0.2.1", 0)


async def test_an_unreadable_key_file_is_a_usage_error(tmp_path: Path) -> None:
    process = await start("--api-key-file", str(tmp_path / "missing"))
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 2
    assert b"--api-key-file" in stderr and b"No such file" in stderr
