"""The service: wires the workers, the purge schedule, health and metrics, signals and systemd together.

Start-up: on SQLite take the file's lock (one daemon per file), check the schema, open the service client,
start the workers, then READY=1; what stops it is logged as `startup_failed` and raised as StartupFailed (one
line, an exit status). SIGTERM or SIGINT: stop claiming, give in-flight calls `daemon.shutdown_grace` seconds,
release leases, STOPPING=1, exit 0. SIGHUP: reload the config file; a bad new config is rejected with a log line
and the old one kept. A SQLite file deleted or replaced while the daemon runs fails readiness and stops the
daemon as SIGTERM would, with exit status 75, so that systemd starts it again on the new file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from tunekeeper import __version__
from tunekeeper.config import EX_CONFIG, ConfigError, Settings, load_settings
from tunekeeper.daemon.backends import VERTEX_CONNECTION_KEYS, tuning_backend
from tunekeeper.daemon.breaker import PauseReason
from tunekeeper.daemon.canceller import Canceller
from tunekeeper.daemon.context import DaemonContext
from tunekeeper.daemon.dispatcher import Dispatcher
from tunekeeper.daemon.evaluator import Evaluator
from tunekeeper.daemon.http import HealthServer, Mount
from tunekeeper.daemon.looplag import LoopLagMonitor
from tunekeeper.daemon.metrics import JOB_COUNT_INTERVAL, Metrics
from tunekeeper.daemon.notify import SystemdNotifier, run_watchdog
from tunekeeper.daemon.poller import Poller
from tunekeeper.daemon.purger import Purger
from tunekeeper.daemon.startup import database_startup_failure, one_daemon_per_file
from tunekeeper.daemon.worker import DATABASE_ERRORS, JobWorker
from tunekeeper.db import watch
from tunekeeper.db.engine import make_engine
from tunekeeper.db.fileguard import DatabaseFileReplaced, FileGuard, guard_engine
from tunekeeper.db.listener import JobNotifications, Subscription
from tunekeeper.db.migrate import SchemaMismatch, check_schema
from tunekeeper.db.store import JobStore
from tunekeeper.exits import EX_TEMPFAIL, StartupFailed
from tunekeeper.logs import add_secrets, first_line, get_logger, set_level
from tunekeeper.secrecy import display_url, secrets_in_file
from tunekeeper.states import State

log = get_logger(__name__)

STATUS_INTERVAL = JOB_COUNT_INTERVAL
# Settings read only at start-up; a reload that changes them says a restart is needed.
RESTART_ONLY = (
    "database",
    "http",
    "web",
    "backend",
    "gemini.base_url",
    "gemini.api_key",
    "gemini.max_connections",
    *(f"vertex.{key}" for key in VERTEX_CONNECTION_KEYS),
    "daemon.replica_name",
)


def default_owner(settings: Settings) -> str:
    return settings.daemon.replica_name or f"{socket.gethostname()}:{os.getpid()}"


@contextlib.asynccontextmanager
async def open_context(
    settings: Settings, metrics: Metrics | None = None, guard: FileGuard | None = None
) -> AsyncIterator[DaemonContext]:
    """The database (schema checked) and the service client, for the daemon or a one-shot command. A database
    that cannot be opened raises StartupFailed; `guard` (SQLite) watches the file's identity on every connection,
    transaction and commit."""
    metrics = metrics or Metrics(process_metrics=False)
    engine = make_engine(
        settings.database.url,
        pool_size=settings.database.daemon_pool_size,
        idle_in_transaction_timeout=settings.database.idle_in_transaction_timeout,
        write_lock_held=metrics.write_lock_held,
    )
    if guard is not None:
        guard_engine(engine, guard)
    try:
        try:
            await check_schema(engine)
            store = JobStore(engine, observer=metrics)
            deployment = await store.deployment_id()
        except DATABASE_ERRORS as exc:
            raise database_startup_failure(settings.database.url, exc) from exc
        async with tuning_backend(settings, deployment, metrics) as backend:
            yield DaemonContext(store, backend, settings, default_owner(settings), metrics, deployment)
    finally:
        await engine.dispose()


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        config_file: Path | None = None,
        notifier: SystemdNotifier | None = None,
        metrics: Metrics | None = None,
        http_mounts: Sequence[Mount] = (),
    ) -> None:
        self.settings = settings
        self.http_mounts = http_mounts  # more pages on the HTTP server (the status page)
        self.config_file = config_file
        self.notifier = notifier or SystemdNotifier.from_environment()
        self.metrics = metrics or Metrics()
        self.stopping = asyncio.Event()
        self.started = asyncio.Event()  # set once READY=1 has been sent
        self.started_at = datetime.now(UTC)
        self.loop_lag = LoopLagMonitor(self.metrics, busy=self._handling_jobs)
        self.context: DaemonContext | None = None
        self.http: HealthServer | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._workers: list[JobWorker] = []
        self._purger: Purger | None = None
        self._reloads: set[asyncio.Task[bool]] = set()
        self._file_guard: FileGuard | None = None
        self.database_replaced: DatabaseFileReplaced | None = None

    def _handling_jobs(self) -> bool:
        return any(worker.busy for worker in self._workers)

    def stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does)."""
        if not self.stopping.is_set():
            log.info("daemon_stopping")
            self.notifier.stopping()
            self.stopping.set()
            for worker in self._workers:
                worker.nudge()

    async def run(self) -> int:
        """Run until stopped; the process exit status. A failure to start raises StartupFailed, logged."""
        try:
            with one_daemon_per_file(self.settings) as guard:
                if guard is not None:
                    guard.on_replaced = self._database_file_replaced
                self._file_guard = guard
                async with open_context(self.settings, self.metrics, guard) as context:
                    self.context = context
                    await self._serve(context)
        except SchemaMismatch as exc:
            log.error("schema_mismatch", error=str(exc))
            return EX_CONFIG
        except StartupFailed as exc:
            log.error("startup_failed", problem=exc.problem, error=str(exc), exit_status=exc.status)
            raise
        return EX_TEMPFAIL if self.database_replaced is not None else 0

    def _database_file_replaced(self, error: DatabaseFileReplaced) -> None:
        """Nothing more is written to a file nobody can see (the guard refuses every transaction now): fail
        readiness and stop, so that the daemon is started again on the file the path names now."""
        self.database_replaced = error
        log.error("database_file_replaced", error=str(error), exit_status=EX_TEMPFAIL)
        self.stop()

    async def _serve(self, context: DaemonContext) -> None:
        dispatcher, poller, canceller, evaluator = (
            Dispatcher(context),
            Poller(context),
            Canceller(context),
            Evaluator(context),
        )
        dispatcher.feeds(poller)  # an accepted job is due for its first poll at once
        dispatcher.feeds(canceller)  # a cancel requested while the create was in flight is now workable
        poller.feeds(evaluator)  # a succeeded job may be due for evaluation
        poller.feeds(dispatcher)  # a finished job frees a tuning slot
        canceller.feeds(dispatcher)  # so does a cancelled one
        self._workers = [dispatcher, poller, canceller, evaluator]
        self._purger = Purger(context)
        self._scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        self._purger.schedule(self._scheduler)
        self._scheduler.start()
        grace = context.settings.daemon.shutdown_grace
        try:
            # Set by the SQLite change watch; None on PostgreSQL, where other replicas' commits go unannounced.
            commits = None if context.store.is_postgres else asyncio.Event()
            async with self._signals(), self._health_server(), asyncio.TaskGroup() as helpers:
                loops = [
                    helpers.create_task(self.loop_lag.run(), name="loop-lag"),
                    helpers.create_task(self._report_status(context, commits), name="status"),
                ]
                interval = self.notifier.watchdog_interval()
                if interval:
                    loops.append(helpers.create_task(run_watchdog(self.notifier, interval), name="watchdog"))
                listener = await self._listen(context, helpers, loops, dispatcher, canceller)
                if commits is not None:
                    loops.append(helpers.create_task(self._watch_sqlite(context, commits), name="sqlite-changes"))
                async with asyncio.TaskGroup() as workers:
                    for worker in self._workers:
                        workers.create_task(worker.run(self.stopping, grace), name=worker.name)
                    workers.create_task(self._stop_purging_on_stop(grace), name="purge-stop")
                    self.notifier.ready()
                    self.started.set()
                    log.info(
                        "daemon_started",
                        version=__version__,
                        owner=context.owner,
                        database=display_url(context.settings.database.url),
                        backend=context.backend.kind,
                        service=display_url(context.settings.tuning.base_url),
                        max_active_jobs=context.settings.tuning.max_active_jobs,
                        http=self.http.url if self.http else None,
                    )
                for task in loops:  # the workers are done: the helper loops end with them
                    task.cancel()
                if listener is not None:
                    await listener.close()
        finally:
            await self._stop_purging(grace=0)  # at once, if the workers ended without a stop
            with contextlib.suppress(*DATABASE_ERRORS):
                released = await context.store.release_leases(context.owner)
                log.info("daemon_stopped", released_leases=released)

    async def _stop_purging_on_stop(self, grace: float) -> None:
        await self.stopping.wait()
        await self._stop_purging(grace)

    async def _stop_purging(self, grace: float) -> None:
        """No new purge runs; the one in flight, if any, gets `grace` seconds (alongside the workers') to end
        before it is cancelled, so that it lets go of the database before the engine is disposed. (Shutting the
        scheduler down first would cancel the run at once, wherever it stood.)"""
        scheduler = self._scheduler
        if scheduler is not None and scheduler.running:
            scheduler.pause()
        if self._purger is not None:
            await self._purger.finish(grace)
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)

    @contextlib.asynccontextmanager
    async def _signals(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        stops = (signal.SIGTERM, signal.SIGINT)
        for signum in stops:
            loop.add_signal_handler(signum, self.stop)
        # SIGHUP through signal.signal, not the loop: removing a loop's handler restores the default action, which
        # for SIGHUP ends the process, and a reload asked for in that moment would kill the daemon. Swapping a
        # Python handler for SIG_IGN leaves no such moment. The handler runs on this (the loop's) thread.
        signal.signal(signal.SIGHUP, lambda signum, frame: loop.call_soon_threadsafe(self._reload_soon))
        try:
            yield
        finally:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload asked for during shutdown is moot
            for signum in stops:
                loop.remove_signal_handler(signum)

    def _reload_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._reloads.add(task)  # keep a reference until it is done
        task.add_done_callback(self._reloads.discard)

    @contextlib.asynccontextmanager
    async def _health_server(self) -> AsyncIterator[None]:
        if not self.settings.http.enabled:
            yield
            return
        about = {
            "version": __version__,
            "pid": os.getpid(),
            "owner": self.context.owner if self.context else None,
            "backend": self.settings.backend,
            "started_at": self.started_at.isoformat(),
        }
        async with HealthServer.from_settings(
            self.settings.http, self.metrics, self._readiness, about, self.http_mounts
        ) as server:
            self.http = server
            yield

    async def _readiness(self) -> dict[str, bool]:
        assert self.context is not None
        database = self.database_replaced is None
        try:
            await self.context.store.ping()
        except DATABASE_ERRORS:
            database = False
        scheduler = self._scheduler is not None and self._scheduler.running
        # a worker whose claims keep failing while the database answers is stuck on something waiting won't fix
        workers = not any(worker.failing for worker in self._workers)
        # Dispatching paused says why: the service refuses the key, or it is failing as a whole (the breaker).
        breaker = self.context.breaker
        return {
            "database": database,
            "scheduler": scheduler,
            "workers": workers,
            "credentials": not breaker.paused_for(PauseReason.CREDENTIALS),
            "service": not breaker.paused_for(PauseReason.SERVICE_UNAVAILABLE),
        }

    async def _listen(
        self,
        context: DaemonContext,
        helpers: asyncio.TaskGroup,
        loops: list[asyncio.Task[None]],
        dispatcher: JobWorker,
        canceller: JobWorker,
    ) -> JobNotifications | None:
        """On PostgreSQL, wake the dispatcher on new jobs and the canceller on cancel requests at once."""
        if not (context.store.is_postgres and context.settings.database.listen):
            return None
        listener = JobNotifications(context.settings.database.url)
        await listener.__aenter__()
        for kind, worker in (("insert", dispatcher), ("cancel", canceller)):
            loops.append(helpers.create_task(_relay(listener.subscribe([kind]), worker), name=f"relay-{kind}"))
        return listener

    async def _watch_sqlite(self, context: DaemonContext, commits: asyncio.Event) -> None:
        """Wake every worker when a commit (a producer's, say) has changed the SQLite file, and mark the job
        counts stale; a failed check marks them stale too, so that STATUS= shows what the database says."""

        def changed() -> None:
            commits.set()
            for worker in self._workers:
                worker.nudge()

        database = context.settings.database
        with contextlib.suppress(DatabaseFileReplaced):  # the guard has told the service, which is stopping
            await watch.follow(
                database.url, database.watch_interval, changed, on_failure=commits.set, guard=self._file_guard
            )

    async def _report_status(self, context: DaemonContext, commits: asyncio.Event | None) -> None:
        """STATUS= for systemctl status, and the jobs-by-state gauge: counted every STATUS_INTERVAL, but with
        `commits` (SQLite) only once a commit has been seen since the last count, so an idle daemon runs no
        query for them."""
        while True:
            if commits is not None:
                commits.clear()  # before counting: a commit made during the count marks it stale again
            counted = await self._publish_job_counts(context)
            await asyncio.sleep(STATUS_INTERVAL)
            if commits is not None and counted:
                await commits.wait()

    async def _publish_job_counts(self, context: DaemonContext) -> bool:
        try:
            census = await context.store.census()
        except DATABASE_ERRORS as exc:
            self.notifier.status(f"database unavailable: {first_line(exc)}"[:200])
            return False
        counts = census.counts
        self.metrics.set_max_active_jobs(context.settings.tuning.max_active_jobs)  # follows reloads
        self.metrics.set_job_counts({state.value: n for state, n in counts.items()})
        self.metrics.set_oldest_jobs({state.value: since.timestamp() for state, since in census.oldest.items()})
        shown = [f"{state.value} {counts[state]}" for state in State if counts.get(state)]
        self.notifier.status(("jobs: " + ", ".join(shown)) if shown else "no jobs")
        return True

    async def reload(self) -> bool:
        """Re-read the config file (SIGHUP). Limits, polling, purge and log settings apply at once."""
        self.notifier.reloading()
        try:
            fresh = load_settings(self.config_file)
        except ConfigError as exc:
            add_secrets(secrets_in_file(self.config_file))  # the new file's, before a word about it is logged
            log.error("config_reload_rejected", error=str(exc))
            self.notifier.ready()
            return False
        current = self.settings
        needs_restart = [key for key in RESTART_ONLY if _setting(fresh, key) != _setting(current, key)]
        if needs_restart:
            log.warning("config_reload_needs_restart", keys=needs_restart)
        kept = fresh.model_copy(
            update={
                "database": current.database,
                "http": current.http,
                "web": current.web,
                "gemini": fresh.gemini.model_copy(
                    update={
                        "base_url": current.gemini.base_url,
                        "api_key": current.gemini.api_key,
                        "max_connections": current.gemini.max_connections,
                    }
                ),
                "backend": current.backend,
                "vertex": fresh.vertex.model_copy(
                    update={key: getattr(current.vertex, key) for key in VERTEX_CONNECTION_KEYS}
                ),
                "daemon": fresh.daemon.model_copy(update={"replica_name": current.daemon.replica_name}),
            }
        )
        self.settings = kept
        if self.context is not None:
            self.context.settings = kept
        set_level(kept.log.level)
        if self._purger is not None and self._scheduler is not None:
            self._purger.schedule(self._scheduler)
        for worker in self._workers:
            worker.nudge()
        log.info("config_reloaded", max_active_jobs=kept.tuning.max_active_jobs, log_level=kept.log.level)
        self.notifier.ready()
        return True


async def _relay(subscription: Subscription, worker: JobWorker) -> None:
    while True:
        if await subscription.wait(60.0):
            worker.nudge()


def _setting(settings: Settings, dotted: str) -> object:
    value: object = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value
