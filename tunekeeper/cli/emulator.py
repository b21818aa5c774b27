"""`tunekeeper emulator`: serve the local stand-in for the Gemini tuning service until SIGINT or SIGTERM.

The first line on stdout is the base URL; after it, one JSON log line per request (unless --quiet).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog

from tunekeeper.emulator.config import (
    DEFAULT_PROJECT,
    QUOTA_MODES,
    EmulatorConfig,
    parse_duration,
    parse_faults,
    parse_latency,
    validate_bucket_name,
    validate_project_id,
)
from tunekeeper.logs import configure_logging

T = TypeVar("T")
_log = structlog.get_logger("tunekeeper.emulator")
API_KEY_ENV = "TUNEKEEPER_EMULATOR_API_KEYS"  # keys separated by commas, kept out of the command line


def api_keys(args: argparse.Namespace) -> frozenset[str]:
    """Every key the emulator accepts: --api-key, the lines of each --api-key-file, and $TUNEKEEPER_EMULATOR_API_KEYS.
    Raises ValueError naming a file that cannot be read (never its content)."""
    keys = set(args.api_keys)
    for path in args.api_key_files:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not text"
            raise ValueError(f"--api-key-file {path}: cannot be read ({reason})") from None
        keys.update(line.strip() for line in text.splitlines() if line.strip())
    keys.update(key.strip() for key in os.environ.get(API_KEY_ENV, "").split(",") if key.strip())
    return frozenset(keys)


def _argument_type(parse: Callable[[str], T], what: str) -> Callable[[str], T]:
    """An argparse `type=` from a parser that raises ValueError, so errors read as usage errors."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"invalid {what}: {exc}") from None

    convert.__name__ = what
    return convert


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "emulator",
        help="serve a local stand-in for the Gemini tuning service",
        description="Serve a local stand-in for the Gemini API tuning service (tunedModels, operations, "
        "generateContent) with simulated tuning, injected faults and quotas. Prints the base URL, then one "
        "JSON log line per request. Control endpoints live under /emulator/ (see tunekeeper/emulator/README.md).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on, 0 for any free one (default: 8765)")
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        dest="api_keys",
        metavar="KEY",
        help="accept only this API key (repeatable); without any, every key or token is accepted. A key given "
        f"here shows in `ps`: prefer --api-key-file or ${API_KEY_ENV}",
    )
    parser.add_argument(
        "--api-key-file",
        action="append",
        default=[],
        dest="api_key_files",
        type=Path,
        metavar="PATH",
        help="accept only the keys in this file, one a line (repeatable; with --api-key and $"
        f"{API_KEY_ENV}, all of them)",
    )
    parser.add_argument(
        "--step-seconds",
        type=_argument_type(parse_duration, "duration"),
        default=0.1,
        metavar="S",
        help="simulated seconds per tuning step, e.g. 0.1 or 20ms (default: 0.1)",
    )
    parser.add_argument(
        "--fail-rate", type=float, default=0.0, metavar="R", help="share of tuning jobs that fail (default: 0)"
    )
    parser.add_argument(
        "--diverge-rate",
        type=float,
        default=0.0,
        metavar="R",
        help='share of Gemini API tuning jobs whose loss diverges to "NaN" after the first epoch (default: 0)',
    )
    parser.add_argument(
        "--nul-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="share of Gemini API generateContent answers whose text ends in U+0000 (default: 0)",
    )
    parser.add_argument(
        "--faults",
        type=_argument_type(parse_faults, "faults"),
        default={},
        metavar="KIND=RATE,...",
        help="injected faults per request, kinds 429, 500, 503, drop, 503-after, drop-after (e.g. 429=0.1,503=0.05)",
    )
    parser.add_argument(
        "--latency",
        type=_argument_type(parse_latency, "latency"),
        default=None,
        metavar="LOW..HIGH",
        help="added latency per request, uniform in the range (e.g. 5ms..50ms)",
    )
    parser.add_argument(
        "--retry-delay",
        type=_argument_type(parse_duration, "duration"),
        default=0.05,
        metavar="S",
        help="RetryInfo delay of injected 429s (default: 0.05)",
    )
    parser.add_argument(
        "--max-active-tuning",
        type=_positive_int,
        default=None,
        metavar="N",
        help="concurrent tuning quota: creates beyond N models in CREATING get 429",
    )
    parser.add_argument(
        "--requests-per-minute", type=_positive_int, default=None, metavar="N", help="API request rate limit"
    )
    parser.add_argument(
        "--quota-mode",
        choices=QUOTA_MODES,
        default="reject",
        help="Vertex AI tuning jobs beyond --max-active-tuning: 'reject' answers 429 RESOURCE_EXHAUSTED, "
        "'wait' creates a job that waits in WAITING_FOR_QUOTA for a slot (default: reject)",
    )
    parser.add_argument(
        "--bucket",
        action="append",
        default=[],
        dest="buckets",
        type=_argument_type(validate_bucket_name, "bucket"),
        metavar="NAME",
        help="a Cloud Storage bucket that exists (repeatable); objects in any other bucket are 404",
    )
    parser.add_argument(
        "--token-lifetime",
        type=_argument_type(parse_duration, "duration"),
        default=3600.0,
        metavar="S",
        help="seconds an issued OAuth access token stays valid (default: 3600; a short one tests refresh)",
    )
    parser.add_argument(
        "--service-account-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="once listening, write a service-account key file there (mode 0600) whose token_uri is this "
        "emulator's token endpoint; its private key is generated locally, never a real credential",
    )
    parser.add_argument(
        "--project",
        type=_argument_type(validate_project_id, "project"),
        default=DEFAULT_PROJECT,
        metavar="P",
        help=f"the project of that key file's service account (default: {DEFAULT_PROJECT})",
    )
    parser.add_argument(
        "--anonymous-storage",
        action="store_true",
        help="Cloud Storage routes accept requests without a bearer token, as clients under "
        "STORAGE_EMULATOR_HOST send them (a token that is sent must still be valid)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for ids, faults, latency and failures (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no log line per request")
    parser.set_defaults(func=run)


class KeyFileError(Exception):
    """The service-account key file could not be written (told apart from a port that cannot be bound)."""


async def serve(
    config: EmulatorConfig, service_account_file: Path | None = None, project: str = DEFAULT_PROJECT
) -> None:
    from tunekeeper.emulator.server import Emulator  # here, so that other commands need not import aiohttp

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with Emulator(config) as emulator:
            print(emulator.base_url, flush=True)
            if service_account_file is not None:
                try:
                    written = emulator.write_service_account_file(service_account_file, project)
                except OSError as exc:
                    raise KeyFileError(f"cannot write {service_account_file}: {exc.strerror or exc}") from None
                # The path and the account's name only: the file's private key is never logged.
                account = emulator.state.service_accounts.account(project)
                _log.info("service_account_file_written", path=str(written), client_email=account.client_email)
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def run(args: argparse.Namespace) -> int:
    try:
        config = EmulatorConfig(
            host=args.host,
            port=args.port,
            api_keys=api_keys(args),
            step_seconds=args.step_seconds,
            fail_rate=args.fail_rate,
            diverge_rate=args.diverge_rate,
            nul_rate=args.nul_rate,
            faults=args.faults,
            latency=args.latency,
            retry_delay=args.retry_delay,
            max_active_tuning=args.max_active_tuning,
            requests_per_minute=args.requests_per_minute,
            seed=args.seed,
            log_requests=not args.quiet,
            quota_mode=args.quota_mode,
            buckets=frozenset(args.buckets),
            token_lifetime=args.token_lifetime,
            anonymous_storage=args.anonymous_storage,
        )
    except ValueError as exc:
        print(f"tunekeeper emulator: {exc}", file=sys.stderr)
        return 2
    configure_logging("info", "json", secrets=config.api_keys)
    try:
        asyncio.run(serve(config, args.service_account_file, args.project))
    except KeyFileError as exc:
        print(f"tunekeeper emulator: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the port is taken
        print(f"tunekeeper emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
