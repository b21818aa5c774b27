"""What the emulator serves per second: operation GETs (its hot path), or whole create+GET job lifecycles.

Run: `.venv/bin/python -m bench.emulator_rps [--mix get|lifecycle] [--duration 5] [--runs 3] [--processes 1]
[--connections 32] [--connection-limit N] [--client raw|aiohttp] [--log]`.

The emulator runs as the real command (`tunekeeper emulator --port 0 --quiet`) in its own process; load-generator
processes then drive it over keep-alive connections for a fixed time, each keeping `connections` requests in
flight (one per connection). Only 200 answers count. The figure is the median of the runs.

Two mixes:

- `get` (default; the `emulator` scenario's figure): a few models are created and left tuning (1 s steps, so
  every answer carries live progress and snapshots), then only their operations are polled: requests/s.
- `lifecycle` (the `throughput` scenario's ceiling): what the daemon sends per job there, and nothing else. One
  `POST /v1beta/tunedModels?tunedModelId=job-N-M` create with the body the daemon builds for a throughput job
  (display name "job N", the default base model, one example, epochCount = batchSize = 5: see `lifecycle_request`),
  then, once the operation is done, one GET of it. The emulator runs with `--step-seconds 1ms` as in that
  scenario, so a job's single step ends 1 ms after its create: the GET is sent 1 ms after the create's answer
  and must find `done`, else it asks again and the repeat is counted (`not_done`). Figure: create+GET pairs
  finished within the window, per second ("jobs/s the emulator serves"). A create costs the emulator far more
  than a GET (body parsing, validation, a model and an operation made), which is why GETs/s / 2 overstates the
  jobs/s it can serve.

Two load generators: `raw` (default), a minimal HTTP/1.1 keep-alive client on asyncio streams, cheap enough to
leave most of the CPU to the server on a small machine (in the lifecycle mix it sends byte for byte the requests
aiohttp sends for the daemon), and `aiohttp`, the ordinary client (in the lifecycle mix it calls
`aiohttp.ClientSession.request` as the daemon's transport does, and decodes every answer's JSON as it does).
Both report their own CPU time and the emulator's (from /proc), per request or per job. `--log` keeps the
per-request JSON log line on (written to /dev/null) to show what it costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from tunekeeper import __version__
from tunekeeper.backends.gemini.types import CreateTunedModelRequest, TrainingExample

ROOT = Path(__file__).resolve().parent.parent
MODELS = 4
EXAMPLES = 100
API_KEY = "bench-key"
HEADERS = {"x-goog-api-key": API_KEY, "Content-Type": "application/json"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
Mix = Literal["get", "lifecycle"]
Client = Literal["raw", "aiohttp"]

# The throughput scenario's jobs, as bench.harness inserts them (`insert_jobs`: display name "job N", no
# base_model, training_data = training_examples(1), epoch_count = batch_size = EPOCHS) and the daemon turns them
# into creates (the default base model; tuned-model id "job-N-<job id>"). throughput.py checks these still match.
LIFECYCLE_STEP_SECONDS = 0.001  # `--step-seconds 1ms`, as in the throughput scenario
LIFECYCLE_EXAMPLE = TrainingExample(text_input="in 0", output="out 0")
LIFECYCLE_EPOCHS = 5
LIFECYCLE_BASE_MODEL = "models/gemini-1.5-flash-001-tuning"  # gemini.default_base_model
# The daemon's session headers (tunekeeper.backends.gemini.client); aiohttp adds Accept and Accept-Encoding itself.
DAEMON_HEADERS = {"User-Agent": f"tunekeeper/{__version__}", "x-goog-api-key": API_KEY}
_OPERATION_NAME = re.compile(r"tunedModels/[A-Za-z0-9][A-Za-z0-9_-]*/operations/[A-Za-z0-9][A-Za-z0-9_-]*")
# Ids per load generator: far more than any run creates, so that ids never repeat within one emulator.
_IDS_PER_GENERATOR = 1_000_000


def lifecycle_request(number: int) -> CreateTunedModelRequest:
    """The create the daemon sends for throughput job `number` (0-based), whose job id is `number + 1`."""
    return CreateTunedModelRequest(
        tuned_model_id=f"job-{number}-{number + 1}",
        display_name=f"job {number}",
        base_model=LIFECYCLE_BASE_MODEL,
        examples=(LIFECYCLE_EXAMPLE,),
        epoch_count=LIFECYCLE_EPOCHS,
        batch_size=LIFECYCLE_EPOCHS,
    )


def _cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid`, from /proc."""
    with open(f"/proc/{pid}/stat") as stat_file:
        stat = stat_file.read()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[11:13] are utime and stime
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _emulator_command(log: bool, mix: Mix) -> list[str]:
    step = "1ms" if mix == "lifecycle" else "1"
    command = [sys.executable, "-m", "tunekeeper", "emulator", "--port", "0", "--step-seconds", step]
    return command if log else [*command, "--quiet"]


async def _start_emulator(log: bool, mix: Mix) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        *_emulator_command(log, mix),
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


@dataclass
class Counts:
    """One load generator's tally. A unit is a request (get mix) or a create+GET pair (lifecycle mix)."""

    ok: int = 0  # units counted in the rate: 200 answers (get), pairs finished within the window (lifecycle)
    total: int = 0  # units finished, stragglers after the window included: what the CPU time paid for
    other: int = 0  # answers that were not 200, or creates whose answer named no operation
    not_done: int = 0  # lifecycle: GETs that found the operation still running (asked again)
    cpu_seconds: float = 0.0  # the generator's own CPU time over its load, connection set-up included

    def pair_finished(self, stop_at: float) -> None:
        # A pair takes two round trips: counting the ones that end after the window would add up to two
        # round trips' worth of work per connection to a few seconds' figure.
        self.total += 1
        if time.monotonic() <= stop_at:
            self.ok += 1


def _operation_name(status: int, document: object) -> str | None:
    """The operation a create answered with, or None when the answer is not one."""
    if status != 200 or not isinstance(document, dict):
        return None
    name = document.get("name")
    return name if isinstance(name, str) and _OPERATION_NAME.fullmatch(name) else None


# ---- raw client ----------------------------------------------------------------------------------------------


async def _raw_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """Send one request on a keep-alive connection; its status and body."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    body = await reader.readexactly(length)
    return int(head[9:12]), body


async def _raw_worker(host: str, port: int, requests: list[bytes], stop_at: float, counts: Counts) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    index = 0
    try:
        while time.monotonic() < stop_at:
            status, _ = await _raw_exchange(reader, writer, requests[index % len(requests)])
            index += 1
            if status == 200:
                counts.ok += 1
                counts.total += 1
            else:
                counts.other += 1
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _raw_create(authority: str, number: int) -> bytes:
    """The create request as aiohttp writes it for the daemon (header order, json.dumps' separators and all)."""
    request = lifecycle_request(number)
    body = json.dumps(request.to_json()).encode()
    head = (
        f"POST /v1beta/tunedModels?tunedModelId={request.tuned_model_id} HTTP/1.1\r\nHost: {authority}\r\n"
        f"User-Agent: tunekeeper/{__version__}\r\nx-goog-api-key: {API_KEY}\r\nAccept: */*\r\n"
        f"Accept-Encoding: gzip, deflate\r\nContent-Length: {len(body)}\r\nContent-Type: application/json\r\n\r\n"
    )
    return head.encode() + body


def _raw_get(authority: str, name: str) -> bytes:
    return (
        f"GET /v1/{name} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: tunekeeper/{__version__}\r\n"
        f"x-goog-api-key: {API_KEY}\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n\r\n"
    ).encode()


async def _raw_lifecycle_worker(host: str, port: int, numbers: Iterator[int], stop_at: float, counts: Counts) -> None:
    authority = f"{host}:{port}"
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < stop_at:
            status, body = await _raw_exchange(reader, writer, _raw_create(authority, next(numbers)))
            name = _operation_name(status, json.loads(body) if status == 200 else None)
            if name is None:
                counts.other += 1
                continue
            get = _raw_get(authority, name)
            while True:
                # The model was created before its answer left the server, so it is done 1 ms after that
                # answer. Under load this wait costs no throughput: the other connections keep the server busy.
                await asyncio.sleep(LIFECYCLE_STEP_SECONDS)
                status, body = await _raw_exchange(reader, writer, get)
                if status != 200:
                    counts.other += 1
                    break
                if b'"done":true' in body:  # the emulator writes compact JSON
                    counts.pair_finished(stop_at)
                    break
                counts.not_done += 1
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# ---- aiohttp client ------------------------------------------------------------------------------------------


async def _aiohttp_worker(session: aiohttp.ClientSession, urls: list[str], stop_at: float, counts: Counts) -> None:
    index = 0
    while time.monotonic() < stop_at:
        async with session.get(urls[index % len(urls)]) as response:
            await response.read()
            if response.status == 200:
                counts.ok += 1
                counts.total += 1
            else:
                counts.other += 1
        index += 1


async def _daemon_call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    params: Mapping[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, object]:
    """One exchange as the transport (backends/googleapi/transport.py) makes it: the status and decoded JSON."""
    async with session.request(method, url, params=params, json=body, allow_redirects=False) as response:
        raw = await response.read()
        status = response.status
    return status, json.loads(raw)


async def _aiohttp_lifecycle_worker(
    session: aiohttp.ClientSession, base_url: str, numbers: Iterator[int], stop_at: float, counts: Counts
) -> None:
    while time.monotonic() < stop_at:
        request = lifecycle_request(next(numbers))
        status, document = await _daemon_call(
            session,
            "POST",
            f"{base_url}/v1beta/tunedModels",
            params={"tunedModelId": request.tuned_model_id},
            body=request.to_json(),
        )
        name = _operation_name(status, document)
        if name is None:
            counts.other += 1
            continue
        while True:
            await asyncio.sleep(LIFECYCLE_STEP_SECONDS)  # see _raw_lifecycle_worker
            status, document = await _daemon_call(session, "GET", f"{base_url}/v1/{name}")
            if status != 200:
                counts.other += 1
                break
            if isinstance(document, dict) and document.get("done") is True:
                counts.pair_finished(stop_at)
                break
            counts.not_done += 1


# ---- one load-generator process ------------------------------------------------------------------------------


async def _load(
    base_url: str,
    paths: list[str],
    duration: float,
    connections: int,
    client: Client,
    mix: Mix,
    first_number: int,
    connection_limit: int,
) -> Counts:
    """One load-generator process: `connections` loops, each one request in flight, for `duration` seconds."""
    counts = Counts()
    numbers = itertools.count(first_number)  # shared by the loops: every create names a new model
    cpu_before = time.process_time()
    stop_at = time.monotonic() + duration
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if client == "raw" and mix == "get":
        requests = [
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nx-goog-api-key: {API_KEY}\r\n\r\n".encode()
            for path in paths
        ]
        await asyncio.gather(*(_raw_worker(host, port, requests, stop_at, counts) for _ in range(connections)))
    elif client == "raw":
        await asyncio.gather(*(_raw_lifecycle_worker(host, port, numbers, stop_at, counts) for _ in range(connections)))
    elif mix == "get":
        connector = aiohttp.TCPConnector(limit=connection_limit)
        async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:
            urls = [base_url + path for path in paths]
            await asyncio.gather(*(_aiohttp_worker(session, urls, stop_at, counts) for _ in range(connections)))
    else:
        # As the daemon's GeminiClient opens its session (timeouts, connection limit, headers).
        async with aiohttp.ClientSession(
            headers=DAEMON_HEADERS,
            timeout=aiohttp.ClientTimeout(total=60.0, connect=10.0),
            connector=aiohttp.TCPConnector(limit=connection_limit),
        ) as session:
            await asyncio.gather(
                *(_aiohttp_lifecycle_worker(session, base_url, numbers, stop_at, counts) for _ in range(connections))
            )
    counts.cpu_seconds = time.process_time() - cpu_before
    return counts


# ---- the measurement -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    per_second: float  # requests/s (get) or jobs/s (lifecycle), within the window
    client_cpu_ms: float  # the load generators' CPU per unit
    emulator_cpu_ms: float  # the emulator's CPU per unit
    not_done: int


async def _run_once(
    emulator: asyncio.subprocess.Process,
    base_url: str,
    paths: list[str],
    duration: float,
    processes: int,
    connections: int,
    client: Client,
    mix: Mix,
    first_number: int,
    connection_limit: int,
) -> RunResult:
    command = [
        sys.executable, "-m", "bench.emulator_rps", "--load-generator", base_url, "--mix", mix,
        "--duration", str(duration), "--connections", str(connections), "--client", client,
        "--connection-limit", str(connection_limit),
        *[arg for path in paths for arg in ("--path", path)],
    ]  # fmt: skip
    generators = [
        await asyncio.create_subprocess_exec(
            *command,
            "--first-number",
            str(first_number + index * _IDS_PER_GENERATOR),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        for index in range(processes)
    ]
    # Includes the generators' start-up, when the emulator is idle: its CPU is what serving the load cost.
    emulator_before = _cpu_seconds(emulator.pid)
    outputs = [await generator.communicate() for generator in generators]
    emulator_cpu = _cpu_seconds(emulator.pid) - emulator_before
    tally = Counts()
    for (stdout, _), generator in zip(outputs, generators, strict=True):
        if generator.returncode != 0:
            raise RuntimeError(f"a load generator failed with status {generator.returncode}")
        counts = Counts(**json.loads(stdout))
        tally.ok += counts.ok
        tally.total += counts.total
        tally.other += counts.other
        tally.not_done += counts.not_done
        tally.cpu_seconds += counts.cpu_seconds
    if tally.other:
        raise RuntimeError(f"{tally.other} answers were not 200 (or a create answered no operation)")
    if not tally.total:
        raise RuntimeError("no request was answered")
    # Each generator counts within its own window of `duration` seconds (start-up excluded).
    return RunResult(
        per_second=tally.ok / duration,
        client_cpu_ms=tally.cpu_seconds / tally.total * 1000.0,
        emulator_cpu_ms=emulator_cpu / tally.total * 1000.0,
        not_done=tally.not_done,
    )


async def measure(
    duration: float = 5.0,
    *,
    runs: int = 3,
    processes: int = 1,
    connections: int = 32,
    client: Client = "raw",
    log: bool = False,
    mix: Mix = "get",
    connection_limit: int | None = None,
) -> dict[str, float]:
    """Operation GETs/s (mix "get") or create+GET jobs/s (mix "lifecycle") the emulator command serves.

    Keys: `per_second` (the median over `runs` runs), `min_per_second`, `max_per_second`, the medians of
    `client_cpu_ms` and `emulator_cpu_ms` (CPU per request or per job), `not_done` (lifecycle GETs that came too
    early, all runs), `runs`, `duration`; for the get mix also `requests_per_second` and its min and max, as the
    emulator scenario reads them. `connection_limit` is the aiohttp client's pool size (default: `connections`).
    """
    process, base_url = await _start_emulator(log, mix)
    assert process.stdout is not None
    drain = asyncio.create_task(_drain(process.stdout))
    try:
        paths = await _create_models(base_url) if mix == "get" else []
        results = [
            await _run_once(
                process,
                base_url,
                paths,
                duration,
                processes,
                connections,
                client,
                mix,
                run * processes * _IDS_PER_GENERATOR,
                connection_limit or connections,
            )
            for run in range(runs)
        ]
    finally:
        process.terminate()
        await process.wait()
        await drain
    rates = [result.per_second for result in results]
    summary = {
        "per_second": statistics.median(rates),
        "min_per_second": min(rates),
        "max_per_second": max(rates),
        "client_cpu_ms": statistics.median(result.client_cpu_ms for result in results),
        "emulator_cpu_ms": statistics.median(result.emulator_cpu_ms for result in results),
        "not_done": float(sum(result.not_done for result in results)),
        "runs": float(runs),
        "duration": duration,
    }
    if mix == "get":
        summary |= {
            "requests_per_second": summary["per_second"],
            "min_requests_per_second": summary["min_per_second"],
            "max_requests_per_second": summary["max_per_second"],
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator_rps", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mix", choices=("get", "lifecycle"), default="get", help="operation GETs, or create+GET jobs (default: get)"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default: 5)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported (default: 3)")
    parser.add_argument("--processes", type=int, default=1, help="load-generator processes (default: 1)")
    parser.add_argument("--connections", type=int, default=32, help="requests in flight per process (default: 32)")
    parser.add_argument(
        "--connection-limit", type=int, default=None, help="aiohttp's connection pool size (default: --connections)"
    )
    parser.add_argument("--client", choices=("raw", "aiohttp"), default="raw", help="load generator (default: raw)")
    parser.add_argument("--log", action="store_true", help="keep the per-request log line on")
    parser.add_argument("--load-generator", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--path", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--first-number", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_generator:
        counts = asyncio.run(
            _load(
                args.load_generator,
                args.path,
                args.duration,
                args.connections,
                args.client,
                args.mix,
                args.first_number,
                args.connection_limit or args.connections,
            )
        )
        print(json.dumps(asdict(counts)))
        return 0
    result = asyncio.run(
        measure(
            args.duration,
            runs=args.runs,
            processes=args.processes,
            connections=args.connections,
            client=args.client,
            log=args.log,
            mix=args.mix,
            connection_limit=args.connection_limit,
        )
    )
    logging = "on" if args.log else "off (--quiet)"
    what, unit = ("operation GETs", "requests") if args.mix == "get" else ("create+GET jobs", "jobs")
    extra = f"; {result['not_done']:.0f} GETs came before done" if args.mix == "lifecycle" else ""
    print(
        f"emulator {what}: {result['per_second']:.0f} {unit}/s "
        f"(median of {args.runs} x {args.duration:g} s; min {result['min_per_second']:.0f}, "
        f"max {result['max_per_second']:.0f}); CPU per {unit[:-1]}: emulator {result['emulator_cpu_ms']:.3f} ms, "
        f"client {result['client_cpu_ms']:.3f} ms; client {args.client} x {args.processes} process(es), "
        f"{args.connections} connections each; request logging {logging}; {os.cpu_count()} CPUs{extra}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
