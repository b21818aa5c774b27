"""`tunekeeper demo`: the tutorial's job, end to end, against the built-in emulator."""

from __future__ import annotations

import argparse
import asyncio
import math

from tunekeeper.exits import EX_USAGE_ARGUMENT, StartupFailed


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="tune the tutorial's number generator against the emulator")
    parser.add_argument(
        "--backend",
        choices=("gemini", "vertex"),
        default="gemini",
        help="the service the emulator plays: the Gemini API (default) or Vertex AI, with Cloud Storage and a "
        "service-account key",
    )
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=None,
        help="simulated seconds per tuning step (default: 0.15 on the Gemini API, 0.5 on Vertex AI: about six "
        "seconds of tuning)",
    )
    parser.set_defaults(func=demo)


def demo(args: argparse.Namespace) -> int:
    step = args.step_seconds
    if step is not None and not (math.isfinite(step) and step > 0):
        raise StartupFailed(
            f"demo: --step-seconds must be a positive number of seconds, got {step:g}",
            problem="usage",
            status=EX_USAGE_ARGUMENT,
        )
    from tunekeeper.demo import run_demo  # here, so that light commands start fast

    return asyncio.run(run_demo(step_seconds=args.step_seconds, backend=args.backend))
