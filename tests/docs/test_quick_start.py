"""README's quick start, as written: `make demo` really runs (the stamps `make test` leaves mean nothing is
installed again); `make test` and `make bench` are dry-run (`make -n`), since this test runs inside the first and
the second takes many minutes: their targets must exist and say what they would do."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.docs.markdown import ROOT, commands, shell_blocks

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def quick_start() -> list[str]:
    [block] = shell_blocks(ROOT / "README.md", "## Quick start")
    found = commands(block)
    assert found == ["make demo", "make test", "make bench"], found
    return found


def test_make_demo_runs_as_written() -> None:
    assert "make demo" in quick_start()
    if not (ROOT / ".venv" / ".installed-runtime").exists():
        pytest.skip("the runtime is not installed by make here (tests run in some other environment)")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TUNEKEEPER_", "MAKE"))}
    result = subprocess.run(
        ["make", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "asked 'thirteen' answers 'fourteen'" in result.stdout
    assert "demo finished in" in result.stdout


@pytest.mark.parametrize("target", ["test", "bench"])
def test_the_other_targets_exist(target: str) -> None:
    assert f"make {target}" in quick_start()
    result = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert {"test": "pytest", "bench": "-m bench"}[target] in result.stdout
