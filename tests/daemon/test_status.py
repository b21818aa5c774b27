"""STATUS= and the jobs-by-state gauge: on SQLite counted again only after a commit, so an idle daemon runs no
query for them; on PostgreSQL, where other replicas' commits go unannounced, every STATUS_INTERVAL.

The daemon runs in-process with a notifier that sends to a socket the test owns; its watchdog pings, every
20 ms, are the test's clock.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.harness import TEST_API_KEY
from tests.waiting import wait_until
from tunekeeper.config import (
    DaemonSettings,
    DatabaseSettings,
    GeminiSettings,
    HttpSettings,
    PollSettings,
    PurgeSettings,
    Settings,
)
from tunekeeper.daemon import service as service_module
from tunekeeper.daemon.notify import SystemdNotifier
from tunekeeper.daemon.service import Service
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.emulator import Emulator

TICK = 0.02


class Datagrams:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.fields: list[str] = []

    def received(self) -> list[str]:
        while True:
            try:
                self.fields += self.sock.recv(4096).decode().split("\n")
            except BlockingIOError:
                return self.fields

    def statuses(self) -> list[str]:
        return [field.removeprefix("STATUS=") for field in self.received() if field.startswith("STATUS=")]

    def pings(self) -> int:
        return self.received().count("WATCHDOG=1")


@pytest.fixture
def datagrams(tmp_path: Path) -> Iterator[Datagrams]:
    receiver = Datagrams(tmp_path / "notify.sock")
    yield receiver
    receiver.sock.close()


def quiet_settings(database_url: str, base_url: str) -> Settings:
    """No safety-net claims and no purge: between commits, nothing but the status loop could query."""
    return Settings(
        database=DatabaseSettings(url=database_url),
        gemini=GeminiSettings(
            base_url=base_url, api_key=SecretStr(TEST_API_KEY), creates_per_minute=6000, requests_per_minute=600000
        ),
        daemon=DaemonSettings(idle_interval=3600, shutdown_grace=5),
        poll=PollSettings(min_interval=0.1, max_interval=0.3, min_step_seconds=0),
        purge=PurgeSettings(enabled=False),
        http=HttpSettings(enabled=False),
    )


async def test_job_counts_follow_commits_on_sqlite_and_the_clock_on_postgres(
    database_url: str,
    store: JobStore,
    emulator: Emulator,
    datagrams: Datagrams,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service_module, "STATUS_INTERVAL", TICK)
    notifier = SystemdNotifier(str(datagrams.path), watchdog_interval=TICK)
    service = Service(quiet_settings(database_url, emulator.base_url), notifier=notifier)
    task = asyncio.create_task(service.run(), name="service")
    try:
        await wait_until(datagrams.statuses, within=15, message="the first STATUS")
        start = datagrams.pings()
        await wait_until(lambda: datagrams.pings() >= start + 25, message="25 watchdog ticks")
        if store.is_postgres:
            assert len(datagrams.statuses()) >= 3, "counted on every tick"
        else:
            assert datagrams.statuses() == ["no jobs"], "nothing was committed, so nothing was counted again"

        job_id = await store.add_job(NewJob(display_name="counted", training_data=[{"text_input": "1", "output": "2"}]))
        await wait_until(
            lambda: "jobs: succeeded 1" in datagrams.statuses(), within=20, message=f"job {job_id} counted"
        )
    finally:
        service.stop()
        async with asyncio.timeout(30):
            assert await task == 0
