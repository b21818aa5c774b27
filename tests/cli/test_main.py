"""The entry point's own duties: the command list, exit statuses for interrupts and usage errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tunekeeper import __version__, cli
from tunekeeper.cli import jobs


def test_every_command_is_registered() -> None:
    parser = cli.build_parser()
    [commands] = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    assert list(commands.choices) == [
        "run", "status", "submit", "jobs", "show", "cancel", "retry", "purge", "web", "db", "config", "emulator", "demo"
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


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"tunekeeper {__version__}"


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "{file}", "db", "check"],
        ["db", "check", "--config", "{file}"],
        ["db", "--config", "{file}", "check"],
        ["config", "check", "--config", "{file}"],
    ],
)
def test_config_is_taken_before_and_after_the_command(argv: list[str], tmp_path: Path) -> None:
    config = tmp_path / "tk.toml"
    config.write_text("")
    args = cli.build_parser().parse_args([part.format(file=config) for part in argv])
    assert args.config == config


def test_config_after_the_command_wins_over_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEKEEPER_CONFIG", str(tmp_path / "default.toml"))
    args = cli.build_parser().parse_args(["jobs", "--config", str(tmp_path / "given.toml")])
    assert args.config == tmp_path / "given.toml"
    assert cli.build_parser().parse_args(["jobs"]).config == tmp_path / "default.toml"
