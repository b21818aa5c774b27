"""`tunekeeper web`: the status page straight from the database, with no daemon."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp

from tests.waiting import wait_until
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore


async def test_tunekeeper_web_serves_the_page_from_the_database(
    database_url: str, store: JobStore, tmp_path: Path
) -> None:
    job_id = await store.add_job(NewJob("served without a daemon"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("TUNEKEEPER_")}
    env |= {"TUNEKEEPER_DATABASE__URL": database_url, "TUNEKEEPER_LOG__FORMAT": "json"}
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tunekeeper", "web", "--port", "0", env=env, stdout=out, stderr=out
        )
    try:

        def listening() -> dict[str, object] | None:
            for line in log.read_text().splitlines():
                if '"web_listening"' in line:
                    found: dict[str, object] = json.loads(line)
                    return found
            return None

        line = await wait_until(listening, within=20, message="web_listening")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{line['port']}/jobs/{job_id}") as response,
        ):
            assert response.status == 200
            assert "served without a daemon" in await response.text()
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0


async def test_the_daemon_serves_the_page_beside_its_probes_unless_it_is_off(sqlite_url: str, tmp_path: Path) -> None:
    from tests.harness import DaemonProcess, daemon_environment

    statuses = []
    for enabled in ("true", "false"):
        env = daemon_environment(sqlite_url, "http://127.0.0.1:1", {"TUNEKEEPER_WEB__ENABLED": enabled})
        async with DaemonProcess(tmp_path, env, name=f"daemon-{enabled}") as daemon:
            url = daemon.events("daemon_started")[0]["http"]
            async with aiohttp.ClientSession() as session:
                for path in ("/", "/healthz"):
                    async with session.get(f"{url}{path}") as response:
                        statuses.append((enabled, path, response.status))
    assert statuses == [("true", "/", 200), ("true", "/healthz", 200), ("false", "/", 404), ("false", "/healthz", 200)]
