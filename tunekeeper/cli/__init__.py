"""The `tunekeeper` command: one argparse parser, subcommands registered by the modules beside this one.

Each command module exposes `register(subparsers)`, which adds its parser with `func=` set to a function of the
parsed arguments returning the exit status. Expected errors end in one line on stderr, never a traceback:
configuration problems exit 78 (EX_CONFIG), other failures to start (StartupFailed) with their own status
(`tunekeeper.exits`), Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tunekeeper import __version__
from tunekeeper.cli import actions, config_check, db, demo, emulator, jobs, purge, run, status, submit, web
from tunekeeper.config import EX_CONFIG, ConfigError, default_config_file
from tunekeeper.exits import StartupFailed

EXIT_INTERRUPTED = 130

COMMAND_MODULES = (run, status, submit, jobs, actions, purge, web, db, config_check, emulator, demo)
"""Registered in this order, which is the order `tunekeeper --help` lists the commands in."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunekeeper", description="Run Gemini model-tuning jobs from a database queue."
    )
    parser.add_argument("--version", action="version", version=f"tunekeeper {__version__}")
    parser.add_argument("--config", type=Path, default=default_config_file(), metavar="PATH", help=CONFIG_HELP)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    _accept_config_anywhere(subparsers)
    return parser


CONFIG_HELP = "TOML configuration file (default: $TUNEKEEPER_CONFIG, else /etc/tunekeeper/tunekeeper.toml if present)"


def _accept_config_anywhere(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`--config` after the command too (`tunekeeper db upgrade --config X`): every subcommand takes it, with a
    default that leaves the top-level value alone unless given there."""
    for command in subparsers.choices.values():
        command.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="PATH", help=CONFIG_HELP)
        for action in command._subparsers._group_actions if command._subparsers else ():
            if isinstance(action, argparse._SubParsersAction):
                _accept_config_anywhere(action)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        status: int = args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    except StartupFailed as exc:
        print(exc, file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return status
