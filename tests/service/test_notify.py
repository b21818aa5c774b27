"""sd_notify against a real datagram socket owned by the test."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.waiting import wait_until
from tunekeeper.daemon.notify import SystemdNotifier, run_watchdog, watchdog_interval


class NotifyListener:
    """Receives datagrams on its own thread, stamping each with its arrival time.

    A thread, so that arrivals are recorded even while the event loop under test is blocked.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            with self._lock:
                self.received.append((time.monotonic(), data.decode()))

    @property
    def messages(self) -> list[str]:
        with self._lock:
            return [message for _, message in self.received]

    def arrivals(self, message: str) -> list[float]:
        with self._lock:
            return [at for at, text in self.received if text == message]

    async def next_messages(self, count: int, *, within: float = 5.0) -> list[str]:
        return await wait_until(
            lambda: self.messages if len(self.messages) >= count else None, within=within, message=f"{count} messages"
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _short_socket_path(tmp_path: Path) -> Path:
    path = tmp_path / "notify.sock"
    if len(os.fsencode(path)) < 100:  # sun_path holds 108 bytes
        return path
    return Path(tempfile.mkdtemp(prefix="tk-", dir="/tmp")) / "notify.sock"


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    path = _short_socket_path(tmp_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    received = NotifyListener(sock)
    yield received
    received.close()


@pytest.fixture
def notifier(listener: NotifyListener) -> Iterator[SystemdNotifier]:
    sender = SystemdNotifier.from_environment()
    yield sender
    sender.close()


async def test_lifecycle_messages_are_exact(listener: NotifyListener, notifier: SystemdNotifier) -> None:
    assert notifier.enabled
    notifier.ready()
    notifier.status("polling 3 jobs")
    notifier.stopping()
    notifier.watchdog()
    assert await listener.next_messages(4) == ["READY=1", "STATUS=polling 3 jobs", "STOPPING=1", "WATCHDOG=1"]


async def test_reloading_carries_the_monotonic_clock(listener: NotifyListener, notifier: SystemdNotifier) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    [message] = await listener.next_messages(1)
    first, second = message.split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


async def test_status_text_stays_one_field(listener: NotifyListener, notifier: SystemdNotifier) -> None:
    notifier.status("line one\nREADY=1")
    assert await listener.next_messages(1) == ["STATUS=line one READY=1"]


async def test_watchdog_pings_at_the_interval(listener: NotifyListener, notifier: SystemdNotifier) -> None:
    interval = 0.05
    task = asyncio.create_task(run_watchdog(notifier, interval))
    try:
        await wait_until(lambda: len(listener.arrivals("WATCHDOG=1")) >= 6, within=5.0, message="6 pings")
    finally:
        task.cancel()
    pings = listener.arrivals("WATCHDOG=1")[:6]
    span = pings[-1] - pings[0]
    # Five intervals between six pings; never faster, and not much slower even on a busy machine.
    assert span >= 5 * interval * 0.9
    assert span < 5 * interval + 1.0
    assert set(listener.messages) == {"WATCHDOG=1"}


async def test_a_blocked_event_loop_stops_the_pings(listener: NotifyListener, notifier: SystemdNotifier) -> None:
    interval = 0.05
    task = asyncio.create_task(run_watchdog(notifier, interval))
    try:
        await wait_until(lambda: len(listener.arrivals("WATCHDOG=1")) >= 2, within=5.0, message="first pings")
        blocked_from = time.monotonic()
        time.sleep(0.5)  # noqa: ASYNC251 - blocking the event loop is what this test is about
        blocked_until = time.monotonic()
        count_after_block = len(listener.arrivals("WATCHDOG=1"))
        await wait_until(
            lambda: len(listener.arrivals("WATCHDOG=1")) > count_after_block, within=5.0, message="pings to resume"
        )
    finally:
        task.cancel()
    # Allow a ping sent just before the block a moment to be stamped by the listener thread.
    during = [at for at in listener.arrivals("WATCHDOG=1") if blocked_from + 0.03 < at < blocked_until]
    assert during == []


async def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"tunekeeper-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    received = NotifyListener(sock)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    sender = SystemdNotifier.from_environment()
    try:
        sender.ready()
        assert await received.next_messages(1) == ["READY=1"]
    finally:
        sender.close()
        received.close()


def test_without_notify_socket_everything_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    sender = SystemdNotifier.from_environment()
    assert not sender.enabled
    sender.ready()
    sender.reloading()
    sender.status("anything")
    sender.watchdog()
    sender.stopping()
    assert sender.notify("READY=1") is False
    assert sender.watchdog_interval() is None


def test_unsupported_address_disables_notifications(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert not SystemdNotifier.from_environment().enabled


def test_a_vanished_socket_warns_once_and_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(_short_socket_path(tmp_path)))  # nobody listens there
    sender = SystemdNotifier.from_environment()
    with capture_logs() as logs:
        sender.ready()
        sender.watchdog()
        assert sender.notify("STATUS=x") is False
    sender.close()
    warnings = [entry for entry in logs if entry["event"] == "sd_notify_failed"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"


def test_watchdog_interval_from_the_environment() -> None:
    pid = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


def test_notifier_takes_the_watchdog_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert SystemdNotifier.from_environment().watchdog_interval() == 0.5
