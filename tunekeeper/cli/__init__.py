"""The `tunekeeper` command: one argparse parser, subcommands registered by the modules beside this one.

Each command module exposes `register(subparsers)`, which adds its parser with `func=` set to a function of the
parsed arguments returning the exit status. Expected errors end in one line on stderr, never a traceback:
configuration problems exit 78 (EX_CONFIG), Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tunekeeper.cli import db, demo, emulator, jobs, purge, run, web
from tunekeeper.config import EX_CONFIG, ConfigError, default_config_file

EXIT_INTERRUPTED = 130

COMMAND_MODULES = (run, jobs, purge, web, db, emulator, demo)
"""Registered in this order, which is the order `tunekeeper --help` lists the commands in."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunekeeper", description="Run Gemini API model-tuning jobs from a database queue."
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=default_config_file(),
        metavar="PATH",
        help="TOML configuration file (default: $TUNEKEEPER_CONFIG, else /etc/tunekeeper/tunekeeper.toml if present)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        status: int = args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return status
