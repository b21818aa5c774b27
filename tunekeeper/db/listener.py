"""PostgreSQL LISTEN for new jobs and cancel requests, so an idle daemon reacts in milliseconds.

The migration's trigger sends `{"id": <job id>, "kind": "insert" | "cancel"}` on the `tunekeeper_jobs` channel.
A dedicated connection listens; when it drops, it is re-established with backoff in the background. Nothing
here ever blocks the daemon: while disconnected, waits just time out and the daemon's polling carries on.

    async with JobNotifications(url) as notes:
        inserts = notes.subscribe({"insert"})
        while running:
            await inserts.wait(settings.daemon.idle_interval)   # True: something happened, look now
            ...

Each consumer takes its own subscription: a notification wakes every subscription it concerns, and one
that arrives while its consumer is busy is kept for that consumer's next wait. After a reconnection every
subscription is woken, because notifications sent while the connection was down are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import structlog
from sqlalchemy.engine import make_url

log = structlog.get_logger(__name__)

CHANNEL = "tunekeeper_jobs"
APPLICATION_NAME = "tunekeeper-listener"
_KEPT_PER_SUBSCRIPTION = 1024
# after a reconnection anything may have happened; a payload we cannot read may be about anything
_WAKES_EVERYONE = frozenset({"reconnected", "unknown"})


@dataclass(frozen=True)
class Notification:
    """One message: `kind` is the trigger's "insert" or "cancel", or "reconnected" / "unknown" (look at everything)."""

    job_id: int | None
    kind: str


class Subscription:
    """One consumer's view: wakes on the kinds it asked for (all kinds when none were given)."""

    def __init__(self, owner: JobNotifications, kinds: Iterable[str] | None) -> None:
        self._owner = owner
        self.kinds = frozenset(kinds) if kinds is not None else None
        self._event = asyncio.Event()
        self._received: deque[Notification] = deque(maxlen=_KEPT_PER_SUBSCRIPTION)

    # the timeout is the API: when it runs out the caller polls the database instead
    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109
        """True as soon as a notification arrived since the last wait that returned True; else False at timeout."""
        if not self._event.is_set():
            try:
                async with asyncio.timeout(timeout):
                    await self._event.wait()
            except TimeoutError:
                return False
        self._event.clear()
        return True

    def take(self) -> list[Notification]:
        """The notifications received since the last take (the most recent ones, if there were very many)."""
        taken = list(self._received)
        self._received.clear()
        return taken

    def close(self) -> None:
        self._owner._subscriptions.discard(self)

    def _deliver(self, note: Notification) -> None:
        if self.kinds is None or note.kind in self.kinds or note.kind in _WAKES_EVERYONE:
            self._received.append(note)
            self._event.set()


class JobNotifications:
    """A LISTEN connection on `tunekeeper_jobs` that reconnects by itself; see the module's docstring."""

    def __init__(
        self,
        url: str,
        *,
        application_name: str = APPLICATION_NAME,
        connect_timeout: float = 10.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        health_interval: float = 30.0,
    ) -> None:
        if make_url(url).get_backend_name() != "postgresql":
            raise ValueError("job notifications need PostgreSQL")
        self._dsn = to_asyncpg_dsn(url)
        self._application_name = application_name
        self._connect_timeout = connect_timeout
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        # A half-open TCP connection (host gone, no RST) never reports termination: probe it now and then.
        self._health_interval = health_interval
        self._subscriptions: set[Subscription] = set()
        self._default = self.subscribe()
        self._connection: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._first_attempt_done = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection (None while disconnected)."""
        connection = self._connection
        if connection is None or connection.is_closed():
            return None
        pid: int = connection.get_server_pid()
        return pid

    def subscribe(self, kinds: Iterable[str] | None = None) -> Subscription:
        subscription = Subscription(self, kinds)
        self._subscriptions.add(subscription)
        return subscription

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait on this object's own subscription to every kind; for a single consumer."""
        return await self._default.wait(timeout)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="tunekeeper-job-notifications")
        # Return once the first attempt is over, so that a caller normally starts out listening; a failed
        # attempt is not an error here: the task keeps trying.
        try:
            await self._first_attempt_done.wait()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = self._min_backoff
        lost_at: float | None = None  # when the last good connection dropped
        attempts = 0
        try:
            while True:
                try:
                    connection, lost = await self._connect()
                except Exception as exc:  # whatever the cause, the answer is to try again later
                    attempts += 1
                    if attempts == 1 and lost_at is None:
                        log.warning("listener_unavailable", error=_describe(exc), retry_in=round(backoff, 2))
                    else:
                        log.debug("listener_connect_failed", error=_describe(exc), attempts=attempts)
                    self._first_attempt_done.set()
                    await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                    backoff = min(backoff * 2, self._max_backoff)
                    continue
                self._connection = connection
                self._first_attempt_done.set()
                if lost_at is None:
                    log.info("listener_connected", channel=CHANNEL)
                else:
                    log.info("listener_reconnected", down_seconds=round(time.monotonic() - lost_at, 3))
                    self._broadcast(Notification(job_id=None, kind="reconnected"))
                backoff, attempts = self._min_backoff, 0
                reason = await self._watch(connection, lost)
                self._connection = None
                lost_at = time.monotonic()
                log.warning("listener_disconnected", reason=reason)
                with contextlib.suppress(Exception):
                    connection.terminate()
        finally:
            self._first_attempt_done.set()  # never leave __aenter__ waiting
            if self._connection is not None:
                self._connection.terminate()  # no graceful close: it could wait on a dead server
                self._connection = None

    async def _connect(self) -> tuple[asyncpg.Connection, asyncio.Event]:
        lost = asyncio.Event()
        connection: asyncpg.Connection = await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout,
            server_settings={"application_name": self._application_name},
        )
        try:
            connection.add_termination_listener(lambda _connection: lost.set())
            async with asyncio.timeout(self._connect_timeout):
                await connection.add_listener(CHANNEL, self._on_notification)
        except BaseException:
            connection.terminate()
            raise
        return connection, lost

    async def _watch(self, connection: asyncpg.Connection, lost: asyncio.Event) -> str:
        """Return, with the reason, once the connection is gone."""
        while True:
            try:
                async with asyncio.timeout(self._health_interval):
                    await lost.wait()
                return "connection closed"
            except TimeoutError:
                pass
            try:
                async with asyncio.timeout(min(self._connect_timeout, self._health_interval)):
                    await connection.fetchval("SELECT 1")
            except Exception as exc:
                return f"health check failed: {_describe(exc)}"

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
            job_id = message.get("id")
            note = Notification(job_id=job_id if isinstance(job_id, int) else None, kind=str(message.get("kind")))
        except (ValueError, AttributeError):
            note = Notification(job_id=None, kind="unknown")
            log.warning("listener_bad_payload", payload=payload[:200])
        self._broadcast(note)

    def _broadcast(self, note: Notification) -> None:
        for subscription in list(self._subscriptions):
            subscription._deliver(note)


def to_asyncpg_dsn(url: str) -> str:
    """The libpq-style DSN for an SQLAlchemy `postgresql+asyncpg://` url."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
