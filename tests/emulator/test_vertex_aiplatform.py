"""google-cloud-aiplatform's `vertexai.tuning.sft`, unchanged, against the emulator: integer enums, int64
strings, the real token flow from a key file, and `refresh()` until the job ends.

The SDK runs in its own virtual environment, `.venv-aiplatform` (made by `make test`: google-cloud-aiplatform
pins google-genai below 3, which the test extra's google-genai is not). Without it the test is skipped, unless
`TUNEKEEPER_REQUIRE_SDKS=1` (set by `.ci/run`) makes that a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from tests.emulator.conftest import make_config
from tunekeeper.emulator import Emulator

REPO = Path(__file__).resolve().parents[2]
SDK_PYTHON = REPO / ".venv-aiplatform" / "bin" / "python"
SCRIPT = Path(__file__).with_name("sdk") / "aiplatform_tune.py"
PROJECT, LOCATION, BUCKET = "aiplatform-proof", "us-central1", "proof-bucket"

if not SDK_PYTHON.exists():
    reason = f"{SDK_PYTHON} is missing: `make test` creates it (google-cloud-aiplatform)"
    if os.environ.get("TUNEKEEPER_REQUIRE_SDKS") == "1":
        raise RuntimeError(reason)
    pytest.skip(reason, allow_module_level=True)


def dataset() -> bytes:
    def turn(role: str, text: str) -> dict[str, object]:
        return {"role": role, "parts": [{"text": text}]}

    lines = [{"contents": [turn("user", str(n)), turn("model", str(n + 1))]} for n in range(12)]
    return "\n".join(json.dumps(line) for line in lines).encode()


async def test_sft_train_and_refresh_until_the_job_succeeds(tmp_path: Path) -> None:
    config = make_config(buckets=frozenset({BUCKET}), step_seconds=0.01)
    async with Emulator(config) as emu:
        key_file = tmp_path / "key.json"
        emu.write_service_account_file(key_file, project=PROJECT)
        emu.state.storage.put(BUCKET, "train/data.jsonl", dataset(), time.time())
        process = await asyncio.create_subprocess_exec(
            str(SDK_PYTHON),
            str(SCRIPT),
            emu.base_url,
            str(key_file),
            PROJECT,
            LOCATION,
            f"gs://{BUCKET}/train/data.jsonl",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "NO_PROXY": "*"},
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, stderr.decode()[-3000:]
        seen = json.loads(stdout.decode().strip().splitlines()[-1])
        stats = emu.stats()

    assert seen["has_succeeded"], seen
    order = ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]  # RUNNING may pass between polls
    assert seen["states"][0] == "JOB_STATE_PENDING" and seen["states"][-1] == "JOB_STATE_SUCCEEDED"
    assert seen["states"] == sorted(seen["states"], key=order.index)
    assert seen["name"].startswith(f"projects/{PROJECT}/locations/{LOCATION}/tuningJobs/")
    assert seen["tuned_model_endpoint_name"].startswith(f"projects/{PROJECT}/locations/{LOCATION}/endpoints/")
    assert seen["tuned_model_name"].startswith(f"projects/{PROJECT}/locations/{LOCATION}/models/")
    routes = stats["requests"]["by_route_status"]
    # google-cloud-aiplatform's clients sign their own JWT with the key file (self-signed JWT access) rather
    # than trade it at the token endpoint; the emulator checks that signature on every call.
    assert "oauth2.token" not in routes
    job_id = seen["name"].rsplit("/", 1)[1]
    assert seen["experiment"].endswith(f"/metadataStores/default/contexts/tuning-experiment-{job_id}")
    assert routes["metadataStores.contexts.get"].get("200", 0) >= 1  # refresh() reads the experiment
    assert routes["tuningJobs.create"] == {"200": 1}
    assert routes["tuningJobs.get"].get("200", 0) >= 1
    assert sys.executable != str(SDK_PYTHON)
