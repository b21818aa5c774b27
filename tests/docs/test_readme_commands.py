"""README's command blocks, run as written (ports and ids substituted) against the emulator on loopback.

A command whose name, options or output change without the README following fails here. Where a line cannot run
unattended as it stands (`--watch` waits for Ctrl-C, `run` for SIGTERM), the test says how it stands in for the
person at the terminal: each such rule is in `unattended` below, and every line must meet one or run as is.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import port_for
import pytest

from tests.docs.markdown import ROOT, commands, shell_blocks

README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the venv the tests run in has the `tunekeeper` command
SCRIPT_TIMEOUT = 180


def wait_for(condition: str, seconds: int = 60) -> str:
    """A shell line that waits (with a deadline) for `condition` to succeed, as a person would watch for it."""
    return f"timeout {seconds} sh -c 'until {condition} >/dev/null 2>&1; do sleep 0.2; done'"


@pytest.fixture
def shell_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TUNEKEEPER_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("CREDENTIALS_DIRECTORY", None)
    return env


def run_script(script: str, cwd: Path, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run a bash script in its own session; whatever it left running in the background is stopped after.

    Output goes to files, not pipes: a background process keeps a pipe open after the script has ended."""
    out, err, given = cwd / "script.stdout", cwd / "script.stderr", cwd / "script.stdin"
    given.write_text(stdin)
    with out.open("w") as stdout, err.open("w") as stderr, given.open() as source:
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd, env=env, stdin=source, stdout=stdout, stderr=stderr, start_new_session=True,
        )  # fmt: skip
        try:
            process.wait(timeout=SCRIPT_TIMEOUT)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out.read_text(), err.read_text())


def test_the_emulator_walkthrough_runs_as_written(tmp_path: Path, shell_env: dict[str, str]) -> None:
    walkthrough = shell_blocks(README, "## Using it")[0]
    port = str(port_for.select_random())
    lines = []
    for command in commands(walkthrough):
        command = command.replace("8765", port)
        if command == "tunekeeper jobs --watch":  # a person watches until the job is done, then presses Ctrl-C
            lines.append(wait_for("tunekeeper jobs --state succeeded --json | grep -q number"))
            command = f"timeout --preserve-status -s INT 8 {command}"
        lines.append(command)
    assert len(lines) >= 10, walkthrough

    result = run_script("\n".join(lines), tmp_path, shell_env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "job 1: number generator" in result.stdout
    assert "succeeded" in result.stdout
    daemon_log = [json.loads(line) for line in (tmp_path / "daemon.log").read_text().splitlines()]
    assert any(line["event"] == "daemon_started" for line in daemon_log)


def unattended(command: str, port: str) -> list[str]:
    """How the test runs one line of the reference block; the rules stand in for the person at the terminal.
    (Ctrl-C comes 8 s after the start: a loaded machine may take seconds to import the program.)"""
    command = command.replace("8765", port).replace(" 42", " $ID")
    if command == "tunekeeper run":  # runs until SIGTERM: in the background, and the next lines use it
        return ["tunekeeper run > daemon.log 2>&1 &"]
    if command == "tunekeeper status":  # the daemon has just been started: it answers once ready
        return [wait_for("tunekeeper status"), command]
    if command.startswith("tunekeeper submit"):  # the id it prints is the job the next lines name
        return [f"ID=$({command})", 'test -n "$ID"']
    if "--watch" in command:  # until Ctrl-C
        return [f"timeout --preserve-status -s INT 8 {command}"]
    if command.startswith("tunekeeper retry"):  # the cancel above is done by the daemon, shortly
        return [wait_for('tunekeeper jobs --state cancelled --json | grep -q "\\"id\\": $ID"'), command]
    if command == "tunekeeper web":  # serves the status page until Ctrl-C (exit 0)
        return [f"timeout --preserve-status -s INT 8 {command}"]
    if command.startswith("tunekeeper emulator"):  # serves until Ctrl-C (exit 130)
        return [f"timeout --preserve-status -s INT 8 {command} || test $? = 130"]
    return [command]


def test_the_reference_commands_run(tmp_path: Path, shell_env: dict[str, str]) -> None:
    reference = shell_blocks(README, "## Using it")[1]
    emulator_port, port = str(port_for.select_random()), str(port_for.select_random())
    setup = [
        # slow steps, so that the job is still tuning when the block cancels it
        f"tunekeeper emulator --port {emulator_port} --api-key local-test-key --step-seconds 5 --quiet &",
        f"export TUNEKEEPER_GEMINI__BASE_URL=http://127.0.0.1:{emulator_port}",
        "export TUNEKEEPER_GEMINI__API_KEY=local-test-key",
        "export TUNEKEEPER_DATABASE__URL=sqlite+aiosqlite:///./tunekeeper.db",
        "export TUNEKEEPER_HTTP__PORT=" + str(port_for.select_random()),
        "export TUNEKEEPER_WEB__PORT=" + str(port_for.select_random()),
        """printf '{"text_input": "%s", "output": "%s"}\\n' 1 2 3 4 5 6 7 8 9 10 > data.jsonl""",
    ]
    lines = [line for command in commands(reference) for line in unattended(command, port)]
    named = {command.split()[1] for command in commands(reference)}
    assert {"db", "run", "status", "submit", "jobs", "show", "cancel", "retry", "purge", "emulator", "web"} <= named

    result = run_script("\n".join(setup + lines), tmp_path, shell_env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "cancel requested for job 1" in result.stdout
    assert "\n2\n" in result.stdout, "retry prints the new job's id"
    assert f"http://127.0.0.1:{port}" in result.stdout, "the reference block's emulator served"
