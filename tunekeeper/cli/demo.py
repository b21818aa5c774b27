"""`tunekeeper demo`: the tutorial's job, end to end, against the built-in emulator."""

from __future__ import annotations

import argparse
import asyncio

from tunekeeper.demo import STEP_SECONDS, run_demo


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="tune the tutorial's number generator against the emulator")
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=STEP_SECONDS,
        help="simulated seconds per tuning step (default: %(default)s)",
    )
    parser.set_defaults(func=demo)


def demo(args: argparse.Namespace) -> int:
    return asyncio.run(run_demo(step_seconds=args.step_seconds))
