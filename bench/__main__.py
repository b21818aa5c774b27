"""`make bench` / `python -m bench`: every scenario, one table, the same figures as JSON in bench/results/.

    python -m bench [--only SCENARIO ...] [--quick] [--repeat N] [--time-scale K] [--vertex-time-scale K]
                    [--postgres-url URL] [--seed N]

See bench/README.md for what each scenario measures and how.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from bench.context import Context
from bench.harness import BenchError, find_postgres
from bench.report import Figure, Results, code_version, machine, medians, save, table
from bench.scenarios import emulator, idle, pickup, polling, quota, scale, sqlite_lock, throughput, vertex, web

SCENARIOS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (emulator, polling, vertex, pickup, throughput, scale, idle, quota, sqlite_lock, web)
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), metavar="SCENARIO", help="run only these")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and shorter windows")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=10.0,
        metavar="K",
        help="polling and quota run K times faster than real time; lags and makespans are reported "
        "multiplied back by K (default: 10; 1 is the real-time experiment)",
    )
    parser.add_argument(
        "--vertex-time-scale",
        type=float,
        default=60.0,
        metavar="K",
        help="the vertex scenario (jobs of 20 min - 2 h) runs K times faster than real time; lags are reported "
        "multiplied back by K (default: 60, so its longest job takes 2 minutes)",
    )
    parser.add_argument(
        "--postgres-url",
        help="PostgreSQL admin url (default: $TUNEKEEPER_TEST_POSTGRES_URL, else postgresql://postgres@127.0.0.1:5432/"
        "test); each scenario creates a fresh database and drops it afterwards",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for durations and arrival times (default: 0)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run each scenario N times and report each figure's median, with the range (default: 1)",
    )
    args = parser.parse_args(argv)
    if args.time_scale < 1:
        parser.error("--time-scale must be >= 1")
    if args.vertex_time_scale < 1:
        parser.error("--vertex-time-scale must be >= 1")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


async def main_async(args: argparse.Namespace, command: str) -> Results:
    results = Results(started=datetime.now(UTC), command=command)
    postgres_url, postgres_note = await find_postgres(args.postgres_url)
    chosen = args.only or list(SCENARIOS)
    with tempfile.TemporaryDirectory(prefix="tunekeeper-bench-") as workdir:
        ctx = Context(
            quick=args.quick,
            time_scale=args.time_scale,
            vertex_time_scale=args.vertex_time_scale,
            seed=args.seed,
            postgres_url=postgres_url,
            postgres_note=postgres_note,
            workdir=Path(workdir),
            results=results,
        )
        print(f"bench: {', '.join(chosen)}{' (quick)' if args.quick else ''}; {postgres_note}", flush=True)
        for name in chosen:
            started = time.monotonic()
            runs: list[list[Figure]] = []
            for attempt in range(1, args.repeat + 1):
                print(f"--- {name}{f' (run {attempt} of {args.repeat})' if args.repeat > 1 else ''} ...", flush=True)
                results.notes.pop(name, None)  # the last run's notes are kept
                try:
                    figures = await SCENARIOS[name].run(ctx)
                except BenchError as exc:
                    results.errors[name] = str(exc)
                    print(f"--- {name} failed: {exc}", flush=True)
                    break
                except Exception as exc:
                    results.errors[name] = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
                    break
                for figure in figures:
                    print(f"    {figure.name}: {figure.shown()}", flush=True)
                runs.append(figures)
            if runs:
                results.figures.extend(medians(runs) if len(runs) > 1 else runs[0])
                if len(runs) > 1:
                    ctx.note(name, f"each figure: the median of {len(runs)} runs (their range in brackets)")
            results.seconds[name] = round(time.monotonic() - started, 1)
            print(f"--- {name}: {results.seconds[name]:.0f} s", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    code = code_version()  # before the run: others may commit while it runs
    results = asyncio.run(main_async(args, command))
    path = save(
        results,
        {
            "machine": machine(),
            "code": code,
            "options": {
                "quick": args.quick,
                "time_scale": args.time_scale,
                "vertex_time_scale": args.vertex_time_scale,
                "seed": args.seed,
                "repeat": args.repeat,
                "only": args.only,
            },
        },
    )
    print()
    print(table(results))
    print(f"\nsaved {path} (and bench/results/latest.json)")
    return 1 if results.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
