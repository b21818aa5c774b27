"""The declared dependency floors exclude releases with known advisories, so no install can pick one."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"

# package -> (the last release with a known advisory that matters here, the first fixed one)
ADVISORIES = {
    # request smuggling GHSA-8495-4g3g-x7pr (< 3.10.11) and GHSA-9548-qrrj-x5pj (< 3.12.14); unbounded memory and
    # CPU GHSA-2g87-pp6c-29x5 (< 3.14.4); no server-side header timeout GHSA-5wr8-gcqf-gqf3 (< 3.14.5)
    "aiohttp": ("3.14.4", "3.14.5"),
    "cryptography": ("49.0.0", "50.0.0"),  # CVE-2026-69247 (< 50), CVE-2026-69249 (<= 48)
    "pyjwt": ("2.10.0", "2.10.1"),  # CVE-2024-53861
}


def declared() -> dict[str, Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    return {requirement.name.lower(): requirement for requirement in requirements}


@pytest.mark.parametrize("package", sorted(ADVISORIES))
def test_the_floor_excludes_releases_with_known_advisories(package: str) -> None:
    vulnerable, fixed = ADVISORIES[package]
    requirement = declared()[package]
    assert not requirement.specifier.contains(vulnerable), f"{requirement} admits {package} {vulnerable}"
    assert requirement.specifier.contains(fixed)
