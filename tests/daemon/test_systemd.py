"""The daemon as systemd sees it: a real subprocess, sd_notify on a socket the test owns, signals, HTTP, logs."""

from __future__ import annotations

import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from tests.harness import TEST_API_KEY, DaemonProcess, daemon_environment
from tests.waiting import wait_until
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator, EmulatorConfig
from tunekeeper.states import State

EXAMPLES = [{"text_input": str(n), "output": str(n + 1)} for n in range(12)]


class NotifySocket:
    """The receiving end of sd_notify: collects every datagram the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def fields(self) -> Iterator[str]:
        for message in self.drain():
            yield from message.split("\n")

    def count(self, field: str) -> int:
        return sum(1 for line in self.fields() if line == field or line.startswith(field))


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    receiver = NotifySocket(tmp_path / "notify.sock")
    yield receiver
    receiver.sock.close()


async def rows_as_text(store: JobStore) -> dict[str, list[str]]:
    """Every row of every table in the database, each rendered as one line of text."""
    async with store.engine.connect() as conn:
        tables: list[str] = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        return {
            table: [repr(tuple(row)) for row in await conn.execute(sa.text(f'SELECT * FROM "{table}"'))]
            for table in tables
        }


async def test_notify_watchdog_reload_and_stop(
    database_url: str, store: JobStore, emulator: Emulator, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    config = tmp_path / "tunekeeper.toml"
    config.write_text("[gemini]\nmax_active_jobs = 2\n")
    env = daemon_environment(
        database_url,
        emulator.base_url,
        {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000", "TUNEKEEPER_CONFIG": str(config)},
    )
    daemon = DaemonProcess(tmp_path, env)
    await daemon.start()
    try:
        await wait_until(lambda: notify_socket.count("READY=1") == 1, message="READY=1")
        await wait_until(lambda: notify_socket.count("WATCHDOG=1") >= 3, message="watchdog pings every 0.2 s")
        await wait_until(lambda: notify_socket.count("STATUS=") >= 1, message="a STATUS line")

        first = await store.add_job(NewJob(display_name="before reload", training_data=EXAMPLES))
        config.write_text("[gemini]\nmax_active_jobs = 5\n[log]\nlevel = 'debug'\n")
        daemon.signal(signal.SIGHUP)
        await wait_until(lambda: daemon.events("config_reloaded"), message="config_reloaded")
        assert daemon.events("config_reloaded")[-1]["max_active_jobs"] == 5
        # The daemon sends READY=1 after it writes config_reloaded: the datagram may not be here yet.
        await wait_until(lambda: notify_socket.count("READY=1") == 2, message="READY=1 after the reload")
        fields = list(notify_socket.fields())
        reloading = fields.index("RELOADING=1")
        assert fields[reloading + 1].startswith("MONOTONIC_USEC=")
        assert "READY=1" in fields[reloading + 2 :]

        config.write_text("[gemini]\nmax_active_jobs = -1\n")
        daemon.signal(signal.SIGHUP)
        await wait_until(lambda: daemon.events("config_reload_rejected"), message="the bad config to be rejected")
        assert "gemini.max_active_jobs" in daemon.events("config_reload_rejected")[-1]["error"]
        await wait_until(lambda: notify_socket.count("READY=1") == 3, message="READY=1 after each reload")

        second = await store.add_job(NewJob(display_name="after reload", training_data=EXAMPLES))

        async def both_succeeded() -> bool:
            jobs = [await store.get_job(job_id) for job_id in (first, second)]
            return all(job is not None and job.state is State.SUCCEEDED for job in jobs)

        await wait_until(both_succeeded, within=20, message="both jobs to succeed across reloads")
        assert await daemon.stop(signal.SIGTERM) == 0
        assert notify_socket.count("STOPPING=1") == 1
    finally:
        if daemon.running:
            await daemon.kill()


async def test_health_metrics_and_json_logs_of_a_full_run(
    database_url: str, store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    async with DaemonProcess(tmp_path, daemon_environment(database_url, emulator.base_url)) as daemon:
        job_id = await store.add_job(NewJob(display_name="observed", training_data=EXAMPLES))

        async def succeeded() -> bool:
            job = await store.get_job(job_id)
            return job is not None and job.state is State.SUCCEEDED

        await wait_until(succeeded, within=20, message="the job to succeed")
        base = daemon.events("daemon_started")[0]["http"]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200
                assert (await response.json())["checks"] == {
                    "database": True,
                    "scheduler": True,
                    "workers": True,
                    "credentials": True,
                    "service": True,
                }

            async def transitions_counted() -> dict[str, float] | None:
                async with http.get(f"{base}/metrics") as response:
                    text = await response.text()
                samples = {
                    sample.labels.get("transition", "") + sample.name: sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples
                    if family.name in ("tunekeeper_job_transitions", "tunekeeper_api_requests")
                }
                return samples if samples.get("succeededtunekeeper_job_transitions_total") else None

            samples = await wait_until(transitions_counted, message="the success to show in /metrics")
            assert samples["acceptedtunekeeper_job_transitions_total"] >= 1
        assert await daemon.stop() == 0

    lines = daemon.log_lines()
    assert lines, "the daemon wrote no log lines"
    for line in lines:
        assert {"timestamp", "level", "event"} <= line.keys(), line
        assert line["timestamp"].endswith("Z")
    changes = [line for line in lines if line["event"] == "job_state_changed"]
    assert [(c["from_state"], c["to_state"]) for c in changes if c["job_id"] == job_id] == [
        ("queued", "submitting"),
        ("submitting", "tuning"),
        ("tuning", "succeeded"),
    ]


@pytest.fixture
async def retrying_emulator() -> AsyncIterator[Emulator]:
    """Seeded so that faults come at once: the k-th request after faults are set gets the k-th draw, and with
    seed 9 and the rates below the very first one meets a 429 (with seed 0 not before the ninth, and a run may
    send fewer requests than that)."""
    async with Emulator(EmulatorConfig(host="127.0.0.1", port=0, step_seconds=0.01, seed=9, log_requests=False)) as emu:
        yield emu


async def test_the_api_key_appears_nowhere(
    database_url: str, store: JobStore, retrying_emulator: Emulator, tmp_path: Path
) -> None:
    emulator = retrying_emulator
    env = daemon_environment(database_url, emulator.base_url, {"TUNEKEEPER_LOG__LEVEL": "debug"})
    async with DaemonProcess(tmp_path, env) as daemon:
        emulator.set_faults({"429": 0.2, "503": 0.1})
        ids = [await store.add_job(NewJob(display_name=f"secret scan {n}", training_data=EXAMPLES)) for n in range(3)]
        broken = await store.add_job(NewJob(display_name="bad model", training_data=EXAMPLES, base_model="models/x"))

        async def finished() -> bool:
            jobs = [await store.get_job(job_id) for job_id in [*ids, broken]]
            return all(job is not None and job.state in (State.SUCCEEDED, State.FAILED) for job in jobs)

        await wait_until(finished, within=30, message="all jobs to finish")
        assert await daemon.stop() == 0
    assert daemon.events("api_retry"), "the faults should have caused retries, which are logged"
    written = [daemon.stdout_path, daemon.stderr_path]
    if make_url(database_url).get_backend_name() == "sqlite":  # the database file, its WAL and shared memory
        database = Path(make_url(database_url).database or "")
        written += database.parent.glob(database.name + "*")
    for path in written:
        assert TEST_API_KEY.encode() not in path.read_bytes(), f"the API key leaked into {path.name}"
    # What the daemon wrote in the database, on either backend: every row of every table, as text.
    rows = await rows_as_text(store)
    assert {"tuning_jobs", "job_events"} <= rows.keys(), rows.keys()
    assert len(rows["tuning_jobs"]) == 4 and len(rows["job_events"]) > 4
    for table, texts in rows.items():
        leaks = [text for text in texts if TEST_API_KEY in text]
        assert not leaks, f"the API key leaked into {table}: {leaks}"
    assert emulator.stats()["creates"]["accepted"] == 3, "the key was in use: the service accepted the creates"
