"""The lock files pin what pyproject.toml asks for: a dependency added or raised without `make lock` fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parent.parent
LOCKS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", re.MULTILINE)


def pins(lock: str) -> dict[str, str]:
    text = (LOCKS / lock).read_text()
    return {canonicalize_name(name): version for name, version in PIN.findall(text)}


def wanted(lock: str) -> list[Requirement]:
    """What pyproject.toml (or, for the SDK venv, aiplatform.in) asks each lock to satisfy."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = {
        "runtime.txt": project["dependencies"],
        "test.txt": project["dependencies"] + project["optional-dependencies"]["test"],
        "aiplatform.txt": [
            line for line in (LOCKS / "aiplatform.in").read_text().splitlines() if line and not line.startswith("#")
        ],
    }[lock]
    return [Requirement(text) for text in texts]


@pytest.mark.parametrize("lock", ["runtime.txt", "test.txt", "aiplatform.txt"])
def test_the_lock_pins_a_version_each_requirement_admits(lock: str) -> None:
    pinned = pins(lock)
    for requirement in wanted(lock):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} is not in requirements/{lock}: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"requirements/{lock} pins {name}=={pinned[name]}, outside {requirement}: run `make lock`"
        )


def test_tests_run_on_the_versions_production_installs() -> None:
    runtime, test = pins("runtime.txt"), pins("test.txt")
    differ = {name: (version, test.get(name)) for name, version in runtime.items() if test.get(name) != version}
    assert not differ, f"runtime and test locks disagree: {differ}"


@pytest.mark.parametrize("lock", ["runtime.txt", "test.txt", "aiplatform.txt"])
def test_every_pin_carries_hashes(lock: str) -> None:
    text = (LOCKS / lock).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n\n", 1)[-1])
    for entry in entries:
        if PIN.match(entry):
            assert "--hash=sha256:" in entry, f"{entry.splitlines()[0]} has no hash in requirements/{lock}"
