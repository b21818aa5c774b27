"""Running the real `tunekeeper` command against a migrated SQLite file, and seeding jobs through the store."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

CLI_TIMEOUT = 60.0


@dataclass(frozen=True)
class Cli:
    """`tunekeeper` as a subprocess, with only the given TUNEKEEPER_* settings (none from the caller's shell)."""

    database_url: str | None
    cwd: Path

    def __call__(self, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        clean = {key: value for key, value in os.environ.items() if not key.startswith("TUNEKEEPER_")}
        if self.database_url is not None:
            clean["TUNEKEEPER_DATABASE__URL"] = self.database_url
        clean.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "tunekeeper", *(str(arg) for arg in args)],
            cwd=self.cwd,
            env=clean,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )


@pytest.fixture
def cli(sqlite_url: str, tmp_path: Path) -> Cli:
    return Cli(sqlite_url, tmp_path)


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
