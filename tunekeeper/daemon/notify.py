"""sd_notify(3) without libsystemd: datagrams to $NOTIFY_SOCKET.

Under systemd (`Type=notify`) the daemon reports READY=1 when it is serving, RELOADING=1 / READY=1 around a
SIGHUP reload, STOPPING=1 on the way out, a one-line STATUS= and WATCHDOG=1 keep-alives. Without $NOTIFY_SOCKET
every method is a cheap no-op, so the same code runs in a terminal, in tests and under systemd.

Sending never raises: a notification that cannot be delivered must not take the daemon down with it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

from tunekeeper.logs import get_logger

log = get_logger(__name__)


class SystemdNotifier:
    """Sends sd_notify messages to one AF_UNIX datagram address (or nowhere)."""

    def __init__(self, address: str | None, *, watchdog_interval: float | None = None) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_interval = watchdog_interval if self._address is not None else None
        self._socket: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            # Newer systemd may hand out vsock: addresses (VMs); we only speak AF_UNIX.
            log.warning("sd_notify_unsupported_address", notify_socket=address)
            address = None
        return cls(address, watchdog_interval=watchdog_interval(env))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec=), or None when the watchdog is off."""
        return self._watchdog_interval

    def ready(self) -> None:
        self.notify("READY=1")

    def reloading(self) -> None:
        # systemd >= 253 (Type=notify-reload) requires the monotonic timestamp with RELOADING=1; older ones ignore it.
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        # One message line per field: a newline inside the text would start a bogus field.
        self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def notify(self, *fields: str) -> bool:
        """Send one datagram of `KEY=value` lines; True when it was handed to the kernel."""
        if self._address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(message, self._address)
        except OSError as exc:
            # Socket gone (manager restarting, test over) or its queue full: drop it; the next message may work.
            if not self._warned:
                self._warned = True
                log.warning("sd_notify_failed", error=str(exc), message=message.decode(errors="replace"))
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of $WATCHDOG_USEC in seconds, when the watchdog is on and meant for this process; else None."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None  # inherited from a parent that is the one being watched
    return usec / 2 / 1_000_000


async def run_watchdog(notifier: SystemdNotifier, interval: float) -> None:
    """Ping WATCHDOG=1 every `interval` seconds until cancelled.

    The pings come from the event loop itself, so a loop that stops turning stops the pings and systemd restarts
    the daemon; a thread would keep pinging for a stuck loop.
    """
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


def _socket_address(address: str) -> str | bytes:
    # '@name' is Linux's abstract namespace: a leading NUL byte, no file.
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    return address
