"""The entry point's own duties: the command list, exit statuses for interrupts and usage errors."""

from __future__ import annotations

import argparse

import pytest

from tunekeeper import cli
from tunekeeper.cli import jobs


def test_every_command_is_registered() -> None:
    parser = cli.build_parser()
    [commands] = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    assert list(commands.choices) == [
        "run", "submit", "jobs", "show", "cancel", "retry", "purge", "web", "db", "emulator", "demo"
    ]  # fmt: skip


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "jobs_command", interrupted)

    assert cli.main(["jobs"]) == cli.EXIT_INTERRUPTED


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([])

    assert exited.value.code == 2
    assert "the following arguments are required: COMMAND" in capsys.readouterr().err
