"""`tunekeeper emulator` as a real process: prints its URL, serves, logs JSON lines, exits 0 on a signal."""

from __future__ import annotations

import asyncio
import json
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
