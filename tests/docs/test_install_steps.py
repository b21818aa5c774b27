"""The install steps of systemd/INSTALL.md and README, run as written in a temporary root.

Root and systemd are not needed: every absolute path the steps name moves under a temporary prefix, `sudo` goes,
and what only systemd can do is done the way the unit does it. The venv is really built from the lock file, the
configuration, key and unit really installed, the unit checked by `systemd-analyze verify`, the schema really
created in the state directory, and the daemon really started with its credential, until `tunekeeper status`
says it is ready.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import port_for
import pytest

from tests.docs.markdown import ROOT, commands, shell_blocks
from tests.docs.test_readme_commands import run_script

INSTALL = ROOT / "systemd" / "INSTALL.md"
README = ROOT / "README.md"
PLACES = ("/opt/tunekeeper", "/etc/tunekeeper", "/etc/systemd/system", "/var/lib/tunekeeper")
UNIT = "/etc/systemd/system/tunekeeper.service"
TEST_KEY = "install-test-key"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"),
]


def relocated(command: str, prefix: Path) -> str:
    command = command.replace("/path/to/tunekeeper", str(ROOT))
    for place in PLACES:
        command = re.sub(rf"(?<!\w){re.escape(place)}", f"{prefix}{place}", command)
    return re.sub(r"(^|;\s*|&&\s*|'|\s)sudo\s+", r"\1", command)


def without_systemd(command: str, prefix: Path) -> list[str]:
    """What the step does, done without systemd (the unit's own settings say how)."""
    unit = f"{prefix}{UNIT}"
    if command == "systemctl daemon-reload":
        # the unit must name the relocated program for verify, which insists the executable exists
        return [
            f"sed -i 's#/opt/tunekeeper#{prefix}/opt/tunekeeper#g; s#/etc/tunekeeper#{prefix}/etc/tunekeeper#g' {unit}",
            f"systemd-analyze verify --man=no {unit}",
        ]
    run = re.match(r"systemd-run .*-p WorkingDirectory=(\S+)\s+(.*)$", command)
    if run:  # the one-off as the service's user, in the service's directory
        directory, inner = run.groups()
        return [f"mkdir -p {directory}", f"(cd {directory} && {inner})"]
    if command == "systemctl enable --now tunekeeper":
        # ExecStart in WorkingDirectory, with LoadCredential= done by hand
        return [
            f"mkdir -p {prefix}/credentials {prefix}/var/lib/tunekeeper",
            f"cp {prefix}/etc/tunekeeper/gemini-api-key {prefix}/credentials/",
            f"(cd {prefix}/var/lib/tunekeeper && CREDENTIALS_DIRECTORY={prefix}/credentials "
            f"$(sed -n 's/^ExecStart=//p' {unit}) > {prefix}/daemon.log 2>&1 &)",
        ]
    if re.search(r"/tunekeeper status\b", command):
        # the daemon has just been started: it answers once ready
        return [f"timeout 60 sh -c 'until {command} >/dev/null 2>&1; do sleep 0.2; done'", command]
    return [command]


def install_script(block: str, prefix: Path) -> str:
    lines = []
    for command in commands(block):
        lines += without_systemd(relocated(command, prefix), prefix)
    return "\n".join(lines)


def check_installed(prefix: Path, output: str) -> None:
    assert (prefix / "opt/tunekeeper/venv/bin/tunekeeper").is_file()
    assert (prefix / "etc/tunekeeper/gemini-api-key").read_text().strip() == TEST_KEY
    assert (prefix / "etc/tunekeeper/gemini-api-key").stat().st_mode & 0o077 == 0, "the key is root's alone"
    assert (prefix / "var/lib/tunekeeper/tunekeeper.db").is_file()
    assert "daemon     running" in output and "ready" in output
    assert TEST_KEY not in output + (prefix / "daemon.log").read_text()


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)  # what a systemd host has before the steps begin
    return root


def environment(prefix: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TUNEKEEPER_")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    env["TUNEKEEPER_HTTP__PORT"] = str(port_for.select_random())  # not 9464, which another daemon may hold
    env["GEMINI_API_KEY"] = TEST_KEY
    return env


def test_install_md_steps_run_as_written(prefix: Path) -> None:
    [block] = shell_blocks(INSTALL, "## Install")
    script = install_script(block, prefix)
    assert "systemd-analyze verify" in script and "db upgrade" in script and "status" in script

    result = run_script(script, prefix, environment(prefix), stdin=TEST_KEY + "\n")

    assert result.returncode == 0, result.stdout + result.stderr
    check_installed(prefix, result.stdout)


def test_the_readme_install_summary_runs_as_written(prefix: Path) -> None:
    [block] = shell_blocks(README, "## Install as a service")
    result = run_script(install_script(block, prefix), prefix, environment(prefix))

    assert result.returncode == 0, result.stdout + result.stderr
    check_installed(prefix, result.stdout)
