"""The demo: the tutorial's number generator, tuned end to end on this machine in well under a minute.

The emulator stands in for the tuning service and the daemon runs in-process on a throwaway SQLite file;
both talk over loopback HTTP exactly as they would in production. The job goes in through the same table a
producer's INSERT uses, a progress bar follows it, then the tuned model answers a prompt.

On the Gemini API (the default) the emulator takes an API key. On Vertex AI (`backend="vertex"`) it plays
Google Cloud: a Cloud Storage bucket for the staged training file, an OAuth token endpoint, and a service-account
key file written beside the database, which the daemon signs its token requests with as it would with a real one.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from tunekeeper.cli import render
from tunekeeper.config import Settings
from tunekeeper.daemon.backends import tuning_backend
from tunekeeper.daemon.notify import SystemdNotifier
from tunekeeper.daemon.service import Service
from tunekeeper.db.engine import make_engine
from tunekeeper.db.migrate import upgrade
from tunekeeper.db.records import Job, NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator, EmulatorConfig
from tunekeeper.logs import configure_logging
from tunekeeper.states import TERMINAL, State
from tunekeeper.tutorial import NUMBER_PAIRS

EVAL_PAIRS = [("1", "2"), ("seven", "eight"), ("ninety nine", "one hundred"), ("4", "5")]
# A question the stand-in answers as a tuned model would (it answers with the output of the training example
# most like the prompt, so a number outside the training set would get its neighbour's answer, not the next one).
PROMPT = "thirteen"
STEP_SECONDS = 0.15  # 38 steps: about six seconds of tuning
# Vertex AI tunes in batches of 8: 10 tuning steps, plus one each pending, processing the dataset and
# post-processing. Half a second a step gives about as long a run, and time to see each sub-state go by.
VERTEX_STEP_SECONDS = 0.5
VERTEX_PROJECT = "tunekeeper-demo"
VERTEX_LOCATION = "us-central1"
VERTEX_BUCKET = "tunekeeper-demo-staging"

Backend = Literal["gemini", "vertex"]


def pairs(items: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"text_input": text, "output": output} for text, output in items]


def default_step_seconds(backend: Backend) -> float:
    return VERTEX_STEP_SECONDS if backend == "vertex" else STEP_SECONDS


async def run_demo(out: TextIO = sys.stdout, *, step_seconds: float | None = None, backend: Backend = "gemini") -> int:
    configure_logging("warning", "console" if sys.stderr.isatty() else "json", stream=sys.stderr)
    started = time.monotonic()
    pace = default_step_seconds(backend) if step_seconds is None else step_seconds
    with tempfile.TemporaryDirectory(prefix="tunekeeper-demo-") as scratch:
        url = f"sqlite+aiosqlite:///{Path(scratch) / 'demo.db'}"
        await upgrade(url)
        emulator_config = EmulatorConfig(
            host="127.0.0.1",
            port=0,
            step_seconds=pace,
            log_requests=False,
            buckets=frozenset({VERTEX_BUCKET}) if backend == "vertex" else frozenset(),
        )
        async with Emulator(emulator_config) as emulator:
            service_keys: dict[str, Any] = (
                _vertex_keys(emulator, Path(scratch))
                if backend == "vertex"
                else {"gemini": {"base_url": emulator.base_url, "api_key": "demo-key"}}
            )
            settings = Settings(
                backend=backend,
                database={"url": url},
                poll={"min_interval": 0.5, "max_interval": 1.0, "min_step_seconds": 0},  # a lively bar
                daemon={"idle_interval": 0.2},
                http={"enabled": False},
                **service_keys,
            )
            out.write(f"tuning service ({_service_name(backend)}, emulated): {emulator.base_url}\n")
            if backend == "vertex":
                vertex = settings.vertex
                out.write(
                    f"project: {vertex.project}, location: {vertex.location}\n"
                    f"service account key: {vertex.credentials_file}\n"
                    f"staging: {vertex.staging_uri}\n"
                )
            out.write(f"database: {url}\n\n")
            service = Service(settings, notifier=SystemdNotifier(None))
            daemon = asyncio.create_task(service.run(), name="daemon")
            engine = make_engine(url)
            try:
                await _wait_started(service, daemon)
                store = JobStore(engine)
                job_id = await store.add_job(_demo_job(backend))
                out.write(f"job {job_id} queued: 'number generator', {len(NUMBER_PAIRS)} examples\n")
                state = await _follow(store, job_id, out)
                job = await store.get_job(job_id)
                assert job is not None
                if state is State.SUCCEEDED and job.tuned_model_name:
                    await _wait_evaluated(store, job_id)
                    serving = job.tuned_endpoint_name or job.tuned_model_name
                    async with tuning_backend(settings, await store.deployment_id()) as remote:
                        answer = await remote.generate(serving, PROMPT)
                    out.write(f"\n{render.clean(serving)} asked {PROMPT!r} answers {render.clean(answer)!r}\n\n")
                job = await store.get_job(job_id)
                assert job is not None
                out.write(render.job_details(job, await store.events(job_id), datetime.now(UTC)) + "\n")
            finally:
                service.stop()
                await daemon
                await engine.dispose()
    out.write(f"\ndemo finished in {time.monotonic() - started:.1f} s\n")
    return 0 if state is State.SUCCEEDED else 1


def _service_name(backend: Backend) -> str:
    return "Vertex AI" if backend == "vertex" else "Gemini API"


def _vertex_keys(emulator: Emulator, scratch: Path) -> dict[str, Any]:
    """Settings for Vertex AI on the emulator: its URL for both APIs, a key file its token endpoint honours."""
    key_file = emulator.write_service_account_file(scratch / "service-account.json", project=VERTEX_PROJECT)
    return {
        "vertex": {
            "project": VERTEX_PROJECT,
            "location": VERTEX_LOCATION,
            "base_url": emulator.base_url,
            "storage_url": emulator.base_url,
            "credentials_file": str(key_file),
            "staging_uri": f"gs://{VERTEX_BUCKET}/demo",
        }
    }


def _demo_job(backend: Backend) -> NewJob:
    """The tutorial's job; on Vertex AI without batch size and learning rate, which it does not take (it
    chooses both; a learning-rate multiplier is its knob)."""
    common: dict[str, Any] = {
        "display_name": "number generator",
        "training_data": pairs(NUMBER_PAIRS),
        "epoch_count": 5,
        "eval_data": pairs(EVAL_PAIRS),
    }
    if backend == "vertex":
        return NewJob(**common, learning_rate_multiplier=1.0)
    return NewJob(**common, batch_size=2, learning_rate=0.001)


def progress_line(job: Job) -> str:
    """The demo's line for the job: state, bar, and the service's finer state or the loss when it has one."""
    line = f"  {job.state.value:<11} {render.progress_bar(job.progress_percent or 0.0)}"
    sub_state = render.sub_state_text(job)
    if sub_state:
        line += f"  {sub_state}"
    if job.mean_loss is not None:
        line += f"  loss {job.mean_loss:.3f}"
    return line


async def _wait_started(service: Service, daemon: asyncio.Task[int]) -> None:
    started = asyncio.create_task(service.started.wait())
    await asyncio.wait([started, daemon], return_when=asyncio.FIRST_COMPLETED)
    if daemon.done():
        started.cancel()
        raise RuntimeError(f"the daemon stopped at start-up with status {daemon.result()}")


async def _follow(store: JobStore, job_id: int, out: TextIO) -> State:
    """Draw a progress bar until the job finishes; its final state."""
    shown = ""
    while True:
        job = await store.get_job(job_id)
        assert job is not None
        line = progress_line(job)
        if line != shown:
            out.write("\r" + line.ljust(len(shown)) if out.isatty() else line + "\n")
            out.flush()
            shown = line
        if job.state in TERMINAL:
            out.write("\n" if out.isatty() else "")
            return job.state
        await asyncio.sleep(0.2)


async def _wait_evaluated(store: JobStore, job_id: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if any(event.kind in ("evaluated", "eval_failed") for event in await store.events(job_id)):
            return
        await asyncio.sleep(0.2)
