"""`tunekeeper demo`: the real command in a subprocess, on each backend, and what it prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.conftest import Cli
from tests.cli.test_render import make_job
from tunekeeper.cli import render
from tunekeeper.demo import progress_line
from tunekeeper.states import State

# The sub-states the demo's bar may show beside it on Vertex AI: the job's own PENDING, then tuningJobState.
VERTEX_SUB_STATES = {"pending", "waiting for quota", "processing dataset", "tuning", "post processing"}
VERTEX_NAME = r"projects/tunekeeper-demo/locations/us-central1"


@pytest.fixture
def demo(tmp_path: Path) -> Cli:
    return Cli(None, tmp_path)


def field(page: str, label: str) -> str:
    found = re.search(rf"^  {re.escape(label)}  +(\S.*)$", page, re.MULTILINE)  # labels are padded
    assert found, f"no {label!r} line in:\n{page}"
    return found.group(1)


def test_demo_on_vertex_tunes_asks_the_endpoint_and_prints_the_timeline(demo: Cli) -> None:
    result = demo("demo", "--backend", "vertex", "--step-seconds", "0.1")

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("tuning service (Vertex AI, emulated): http://127.0.0.1:")
    assert "project: tunekeeper-demo, location: us-central1" in out
    assert "staging: gs://tunekeeper-demo-staging/demo" in out
    key_line = re.search(r"^service account key: (\S+)$", out, re.MULTILINE)
    assert key_line, out
    key_file = Path(key_line.group(1))
    assert key_file.name == "service-account.json"
    assert not key_file.exists(), "the demo's temporary directory, key included, is removed at the end"
    assert "PRIVATE KEY" not in out + result.stderr
    assert "job 1 queued: 'number generator', 15 examples" in out

    bar_lines = [line for line in out.splitlines() if re.match(r"  (queued|tuning|succeeded) +[█░]{10}", line)]
    assert bar_lines[-1].split() == ["succeeded", "██████████"]
    assert any(line.split()[0] == "tuning" for line in bar_lines)
    shown = {" ".join(line.split()[2:]) for line in bar_lines if len(line.split()) > 2}
    assert shown <= VERTEX_SUB_STATES, shown  # words, never the service's enum names

    asked = re.search(rf"^({VERTEX_NAME}/endpoints/\d+) asked 'thirteen' answers '(.+)'$", out, re.MULTILINE)
    assert asked, out
    assert asked.group(2) == "fourteen", "the headline answer is the next number"
    page = out[out.index("job 1: number generator") :]
    assert field(page, "state") == "succeeded"
    assert field(page, "backend") == "vertex"
    assert field(page, "endpoint") == asked.group(1)
    assert re.fullmatch(rf"{VERTEX_NAME}/tuningJobs/\d+", field(page, "tuning job"))
    assert re.fullmatch(rf"{VERTEX_NAME}/models/\d+@1", field(page, "model"))
    assert re.fullmatch(r"gs://tunekeeper-demo-staging/demo/[0-9a-f]{32}/1/train\.jsonl", field(page, "staged file"))
    assert field(page, "request") == "base model (default), epochs 5, learning rate multiplier 1.0"
    assert field(page, "progress").startswith("██████████ 100%")
    assert re.fullmatch(r"[01](\.\d+)?", field(page, "eval score"))
    timeline = page.split("timeline (UTC)\n", 1)[1].splitlines()
    kinds = [line.split()[2] for line in timeline[1:] if re.match(r"  \d{4}-", line)]
    assert kinds == ["claimed", "accepted", "succeeded", "evaluated"]
    assert re.search(r"demo finished in \d+\.\d s$", out.rstrip())


def test_demo_on_the_gemini_api_stays_the_default(demo: Cli) -> None:
    result = demo("demo", "--step-seconds", "0.03")

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("tuning service (Gemini API, emulated): http://127.0.0.1:")
    assert "staging:" not in out
    assert re.search(r"^tunedModels/number-generator-1 asked 'thirteen' answers 'fourteen'$", out, re.MULTILINE)
    page = out[out.index("job 1: number generator") :]
    assert field(page, "operation").startswith("tunedModels/number-generator-1/operations/")
    assert field(page, "request") == "base model (default), epochs 5, batch size 2, learning rate 0.001"
    for label in ("backend", "tuning job", "endpoint", "staged file"):
        assert not re.search(rf"^  {label}  ", page, re.MULTILINE), label
    assert re.search(r"^  loss +\S", page, re.MULTILINE)


def test_the_demo_line_shows_the_sub_state_beside_the_bar() -> None:
    waiting = make_job(state=State.TUNING, backend="vertex", sub_state="WAITING_FOR_QUOTA", progress_percent=30.0)
    bar = render.progress_bar(30.0)

    assert progress_line(waiting) == f"  tuning      {bar}  waiting for quota"
    gemini = make_job(state=State.TUNING, progress_percent=30.0, mean_loss=1.25)
    assert progress_line(gemini) == f"  tuning      {bar}  loss 1.250"
