"""Requests per second the emulator serves on its hot path, operation GETs.

Run: `.venv/bin/python -m bench.emulator_rps [--duration 5] [--runs 3] [--processes 1] [--connections 32]
[--client raw|aiohttp] [--log]`.

The emulator runs as the real command (`tunekeeper emulator --port 0 --quiet`) in its own process. A few
models are created and left tuning (slow steps, so every answer carries live progress and snapshots); then
load-generator processes poll their operations over keep-alive connections for a fixed time, each keeping
`connections` requests in flight. Only 200 answers count. The figure is the median of the runs.

Two load generators: `raw` (default), a minimal HTTP/1.1 keep-alive client on asyncio streams that is cheap
enough to leave most of the CPU to the server on a small machine, and `aiohttp`, the ordinary client.
`--log` keeps the per-request JSON log line on (written to /dev/null) to show what it costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
MODELS = 4
EXAMPLES = 100
HEADERS = {"x-goog-api-key": "bench-key", "Content-Type": "application/json"}


def _emulator_command(log: bool) -> list[str]:
    command = [sys.executable, "-m", "tunekeeper", "emulator", "--port", "0", "--step-seconds", "1"]
    return command if log else [*command, "--quiet"]


async def _start_emulator(log: bool) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        *_emulator_command(log),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=None,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
    if not line.startswith(b"http://"):
        process.kill()
        await process.wait()
        raise RuntimeError(f"the emulator did not print its URL (got {line!r})")
    return process, line.decode().strip()


async def _drain(stream: asyncio.StreamReader) -> None:
    # Log lines must be read, or the emulator blocks on a full pipe.
    while await stream.read(65536):
        pass


async def _create_models(base_url: str) -> list[str]:
    examples = [{"text_input": f"input {i}", "output": f"output {i}"} for i in range(EXAMPLES)]
    paths = []
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        for index in range(MODELS):
            body = {
                "display_name": f"bench model {index}",
                "base_model": "models/gemini-1.5-flash-001-tuning",
                "tuning_task": {
                    "hyperparameters": {"epoch_count": 5},
                    "training_data": {"examples": {"examples": examples}},
                },
            }
            async with session.post(f"{base_url}/v1beta/tunedModels", json=body) as response:
                response.raise_for_status()
                operation = await response.json()
            paths.append(f"/v1/{operation['name']}")
    return paths


async def _raw_worker(host: str, port: int, requests: list[bytes], stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    index = 0
    try:
        while time.monotonic() < stop_at:
            writer.write(requests[index % len(requests)])
            index += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 200 "):
                counts[0] += 1
            else:
                counts[1] += 1
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _aiohttp_worker(session: aiohttp.ClientSession, urls: list[str], stop_at: float, counts: list[int]) -> None:
    index = 0
    while time.monotonic() < stop_at:
        async with session.get(urls[index % len(urls)]) as response:
            await response.read()
            counts[0 if response.status == 200 else 1] += 1
        index += 1


async def _load(base_url: str, paths: list[str], duration: float, connections: int, client: str) -> dict[str, int]:
    """One load-generator process: `connections` loops, each one request in flight, for `duration` seconds."""
    counts = [0, 0]  # 200 answers, other answers
    stop_at = time.monotonic() + duration
    if client == "raw":
        parts = urlsplit(base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        requests = [
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nx-goog-api-key: bench-key\r\n\r\n".encode()
            for path in paths
        ]
        await asyncio.gather(*(_raw_worker(host, port, requests, stop_at, counts) for _ in range(connections)))
    else:
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:
            urls = [base_url + path for path in paths]
            await asyncio.gather(*(_aiohttp_worker(session, urls, stop_at, counts) for _ in range(connections)))
    return {"ok": counts[0], "other": counts[1]}


async def _run_once(
    base_url: str, paths: list[str], duration: float, processes: int, connections: int, client: str
) -> float:
    command = [
        sys.executable, "-m", "bench.emulator_rps", "--load-generator", base_url,
        "--duration", str(duration), "--connections", str(connections), "--client", client,
        *[arg for path in paths for arg in ("--path", path)],
    ]  # fmt: skip
    generators = [
        await asyncio.create_subprocess_exec(*command, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        for _ in range(processes)
    ]
    outputs = [await generator.communicate() for generator in generators]
    ok = other = 0
    for (stdout, _), generator in zip(outputs, generators, strict=True):
        if generator.returncode != 0:
            raise RuntimeError(f"a load generator failed with status {generator.returncode}")
        result = json.loads(stdout)
        ok += result["ok"]
        other += result["other"]
    if other:
        raise RuntimeError(f"{other} answers were not 200")
    # Each generator counts answers within its own window of `duration` seconds (start-up excluded).
    return ok / duration


async def measure(
    duration: float = 5.0,
    *,
    runs: int = 3,
    processes: int = 1,
    connections: int = 32,
    client: str = "raw",
    log: bool = False,
) -> dict[str, float]:
    """Operation GETs per second against the emulator command: median, min and max over `runs` runs."""
    process, base_url = await _start_emulator(log)
    assert process.stdout is not None
    drain = asyncio.create_task(_drain(process.stdout))
    try:
        paths = await _create_models(base_url)
        rates = [await _run_once(base_url, paths, duration, processes, connections, client) for _ in range(runs)]
    finally:
        process.terminate()
        await process.wait()
        await drain
    return {
        "requests_per_second": statistics.median(rates),
        "min_requests_per_second": min(rates),
        "max_requests_per_second": max(rates),
        "runs": float(runs),
        "duration": duration,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator_rps", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default: 5)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported (default: 3)")
    parser.add_argument("--processes", type=int, default=1, help="load-generator processes (default: 1)")
    parser.add_argument("--connections", type=int, default=32, help="requests in flight per process (default: 32)")
    parser.add_argument("--client", choices=("raw", "aiohttp"), default="raw", help="load generator (default: raw)")
    parser.add_argument("--log", action="store_true", help="keep the per-request log line on")
    parser.add_argument("--load-generator", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--path", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_generator:
        counts = asyncio.run(_load(args.load_generator, args.path, args.duration, args.connections, args.client))
        print(json.dumps(counts))
        return 0
    result = asyncio.run(
        measure(
            args.duration,
            runs=args.runs,
            processes=args.processes,
            connections=args.connections,
            client=args.client,
            log=args.log,
        )
    )
    logging = "on" if args.log else "off (--quiet)"
    print(
        f"emulator operation GETs: {result['requests_per_second']:.0f} requests/s "
        f"(median of {args.runs} x {args.duration:g} s; min {result['min_requests_per_second']:.0f}, "
        f"max {result['max_requests_per_second']:.0f}; client {args.client} x {args.processes} process(es), "
        f"{args.connections} connections each; request logging {logging}; {os.cpu_count()} CPUs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
