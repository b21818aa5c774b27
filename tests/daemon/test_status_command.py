"""`tunekeeper status` beside a real daemon: who runs, since when, whether it is ready, who holds leases."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from tests.harness import DaemonProcess, daemon_environment
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator

EXAMPLES = [{"text_input": str(n), "output": str(n + 1)} for n in range(10)]


async def status(env: Mapping[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tunekeeper", "status", *args,
        env=dict(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_status_follows_a_daemon_from_start_to_stop(
    database_url: str, store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    env = daemon_environment(database_url, emulator.base_url)
    code, out, _ = await status(env)
    assert code == 3, out
    assert out.startswith("daemon     not running: no daemon answers at http://127.0.0.1:0")

    # a job another replica has in hand, for a long while
    await store.add_job(NewJob(display_name="held elsewhere", training_data=EXAMPLES))
    [held] = await store.claim_for_submission("replica-b", limit=1, max_active=10, lease_seconds=600)

    async with DaemonProcess(tmp_path, env) as daemon:
        [listening] = await daemon.wait_for_events("http_listening")
        here = env | {"TUNEKEEPER_HTTP__PORT": str(listening["port"])}

        code, out, err = await status(here, "--json")
        assert code == 0, out + err
        report = json.loads(out)
        assert daemon.process is not None
        assert report["daemon"]["pid"] == daemon.process.pid
        assert report["daemon"]["ready"] is True
        assert report["daemon"]["checks"] == {
            "database": True,
            "scheduler": True,
            "workers": True,
            "credentials": True,
            "service": True,
        }
        started = datetime.fromisoformat(report["daemon"]["started_at"])
        assert abs((datetime.now(UTC) - started).total_seconds()) < 120
        assert {"owner": "replica-b", "jobs": 1, "leases": []} in report["leases"]
        assert report["jobs"] == {"submitting": 1}
        assert report["exit_status"] == 0
        assert "password" not in out

        code, text, _ = await status(here)
        assert code == 0
        assert f"pid {daemon.process.pid}" in text
        assert "leases     replica-b: 1 jobs in hand" in text
        assert held.id > 0

        assert await daemon.stop() == 0
        code, out, _ = await status(here)
        assert code == 3
        assert out.startswith("daemon     not running")
