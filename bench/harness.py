"""What the scenarios start and measure: the emulator and the daemon as subprocesses, databases, /proc figures.

Everything listens on 127.0.0.1. The emulator is the real command (`tunekeeper emulator --port 0 --quiet`), which
prints its URL as the first line; the daemon is `python -m tunekeeper run` with its settings in TUNEKEEPER_*
variables and JSON logs in a file, so its CPU time and memory are its own (read from /proc/<pid>/stat and
/proc/<pid>/status). Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
from sqlalchemy.engine import URL, make_url

from tunekeeper.db.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
HEADERS = {"x-goog-api-key": API_KEY, "Content-Type": "application/json"}
BASE_MODEL = "models/gemini-1.5-flash-001-tuning"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
_numbers = itertools.count(1)
T = TypeVar("T")


class BenchError(Exception):
    """A scenario could not run (a process died, a deadline passed): the message says which."""


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def wait_for(
    condition: Callable[[], Awaitable[bool]], *, within: float, what: str, interval: float = 0.1
) -> None:
    """Await `condition` every `interval` seconds until it holds; BenchError after `within` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(interval)


# ---- processes ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    """One reading of a process: CPU seconds (user + system) so far, current and peak resident memory."""

    at: float  # time.monotonic()
    cpu_seconds: float
    rss_bytes: int
    peak_rss_bytes: int


def proc_sample(pid: int) -> ProcSample:
    with open(f"/proc/{pid}/stat") as stat_file:
        stat = stat_file.read()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is the state (field 3)
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15
    memory: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status_file:
        for line in status_file:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                memory[key] = int(value.split()[0]) * 1024
    return ProcSample(time.monotonic(), cpu, memory.get("VmRSS", 0), memory.get("VmHWM", 0))


def cpu_share(first: ProcSample, last: ProcSample) -> float:
    """CPU seconds per wall second between two samples (1.0 = one core busy)."""
    return (last.cpu_seconds - first.cpu_seconds) / max(1e-9, last.at - first.at)


class EmulatorProcess:
    """`tunekeeper emulator --port 0 --quiet ARGS`; `url` is what it printed; stats and settings over HTTP."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""
        self.session: aiohttp.ClientSession | None = None
        self._drain: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EmulatorProcess:
        command = [sys.executable, "-m", "tunekeeper", "emulator", "--port", "0", "--quiet", *self.args]
        self.process = await asyncio.create_subprocess_exec(*command, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout=30)
        except TimeoutError:
            line = b""
        if not line.startswith(b"http://"):
            await self._kill()
            raise BenchError(f"the emulator did not print its URL (got {line!r})")
        self.url = line.decode().strip()
        self._drain = asyncio.create_task(_drain(self.process.stdout))
        self.session = aiohttp.ClientSession(
            headers=HEADERS, connector=aiohttp.TCPConnector(limit=256), timeout=aiohttp.ClientTimeout(total=60)
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.session is not None:
            await self.session.close()
        await self._kill()

    async def _kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._drain is not None:
            await self._drain

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _session(self) -> aiohttp.ClientSession:
        assert self.session is not None, "use EmulatorProcess as an async context manager"
        return self.session

    async def stats(self) -> dict[str, Any]:
        async with self._session().get(f"{self.url}/emulator/stats") as response:
            response.raise_for_status()
            result: dict[str, Any] = await response.json()
        return result

    async def configure(self, **settings: Any) -> None:
        async with self._session().post(f"{self.url}/emulator/faults", json=settings) as response:
            response.raise_for_status()

    async def create_model(self, model_id: str, steps: int) -> dict[str, Any]:
        """Create a model that takes `steps` steps (see `training_request`); the operation as answered."""
        body = {"display_name": model_id, "base_model": BASE_MODEL, "tuning_task": training_task(steps)}
        url = f"{self.url}/v1beta/tunedModels?tunedModelId={model_id}"
        async with self._session().post(url, json=body) as response:
            if response.status != 200:
                raise BenchError(f"create {model_id}: HTTP {response.status}: {await response.text()}")
            operation: dict[str, Any] = await response.json()
        return operation


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


EPOCHS = 5


def training_examples(steps: int) -> list[dict[str, str]]:
    """Examples for a job of `steps` steps: `steps` examples, EPOCHS epochs, batch size EPOCHS."""
    return [{"text_input": f"in {i}", "output": f"out {i}"} for i in range(max(1, steps))]


def job_data(steps: int) -> str:
    """A job's training_data column for a job of `steps` steps (with epoch_count = batch_size = EPOCHS)."""
    return json.dumps(training_examples(steps))


INSERT_JOB = "INSERT INTO tuning_jobs (display_name, training_data, epoch_count, batch_size) VALUES (?, ?, ?, ?)"


def training_task(steps: int) -> dict[str, Any]:
    return {
        "hyperparameters": {"epoch_count": EPOCHS, "batch_size": EPOCHS},
        "training_data": {"examples": {"examples": training_examples(steps)}},
    }


def daemon_environment(database_url: str, base_url: str, config_file: Path, **settings: str) -> dict[str, str]:
    """Our environment minus TUNEKEEPER_* and systemd variables, plus the daemon's settings.

    `settings` keys are SECTION__KEY (e.g. POLL__MIN_INTERVAL="0.2"); the daemon's own defaults apply otherwise.
    """
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TUNEKEEPER_") and key not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    }
    return {
        **inherited,
        "TUNEKEEPER_CONFIG": str(config_file),
        "TUNEKEEPER_DATABASE__URL": database_url,
        "TUNEKEEPER_GEMINI__BASE_URL": base_url,
        "TUNEKEEPER_GEMINI__API_KEY": API_KEY,
        "TUNEKEEPER_HTTP__PORT": "0",
        "TUNEKEEPER_LOG__FORMAT": "json",
        **{f"TUNEKEEPER_{key.upper()}": value for key, value in settings.items()},
    }


class DaemonProcess:
    """The daemon as a subprocess; stdout (JSON log lines) and stderr go to files in `directory`.

    `module` is what `python -m` runs: `tunekeeper` (with `run`), or `bench.scaled_daemon` for a time-scaled run.
    """

    def __init__(
        self, directory: Path, env: Mapping[str, str], *, name: str = "daemon", command: Sequence[str] = ()
    ) -> None:
        self.env = dict(env)
        self.stdout_path = directory / f"{name}.stdout"
        self.stderr_path = directory / f"{name}.stderr"
        self.name = name
        self.command = list(command) or ["-m", "tunekeeper", "run"]
        self.process: asyncio.subprocess.Process | None = None
        self.http = ""
        self.started_at = 0.0  # time.time() of the daemon_started line's arrival

    async def __aenter__(self) -> DaemonProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self, within: float = 60.0) -> None:
        # New files: the log lines read below (daemon_started, its http URL) must be this process's own.
        with self.stdout_path.open("wb") as stdout, self.stderr_path.open("wb") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, *self.command, cwd=ROOT, env=self.env, stdout=stdout, stderr=stderr
            )

        async def started() -> bool:
            if self.process is not None and self.process.returncode is not None:
                raise BenchError(f"{self.name} exited at start-up: {self._tail()}")
            line = self.first_event("daemon_started")
            if line is None:
                return False
            self.http = str(line.get("http") or "")
            return True

        await wait_for(started, within=within, what=f"{self.name} to log daemon_started", interval=0.05)
        self.started_at = time.time()

    async def stop(self, within: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit within `within` seconds; the exit status."""
        process = self.process
        if process is None or process.returncode is not None:
            return process.returncode if process else None
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout=within)
        except TimeoutError:
            process.kill()
            return await process.wait()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def sample(self) -> ProcSample:
        if self.process is None or self.process.returncode is not None:
            raise BenchError(f"{self.name} is not running: {self._tail()}")
        return proc_sample(self.pid)

    def check_running(self) -> None:
        self.sample()

    def log_lines(self) -> Iterable[dict[str, Any]]:
        if not self.stdout_path.exists():
            return
        with self.stdout_path.open(errors="replace") as lines:
            for line in lines:
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        yield json.loads(line)

    def first_event(self, name: str) -> dict[str, Any] | None:
        return next((line for line in self.log_lines() if line.get("event") == name), None)

    def count_events(self, name: str) -> int:
        return sum(1 for line in self.log_lines() if line.get("event") == name)

    async def metric(self, session: aiohttp.ClientSession, name: str) -> float | None:
        """One unlabelled sample from the daemon's /metrics, or None if absent."""
        self.check_running()
        try:
            async with session.get(f"{self.http}/metrics") as response:
                text = await response.text()
        except aiohttp.ClientError as exc:
            raise BenchError(f"{self.name}: GET {self.http}/metrics: {exc}") from None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def _tail(self) -> str:
        text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return text.strip()[-2000:] or "(no stderr)"


def empty_config(directory: Path) -> Path:
    """An empty TOML file, so that no /etc/tunekeeper/tunekeeper.toml on this machine changes the daemon."""
    path = directory / "tunekeeper.toml"
    path.write_text("# benchmark: every setting comes from TUNEKEEPER_* variables\n")
    return path


# ---- databases ---------------------------------------------------------------------------------------------


class Database:
    """A fresh, migrated database (a SQLite file, or a new PostgreSQL database) and plain SQL on it.

    SQL is written with `?` placeholders; timestamps go in and come out as unix seconds (see `stamp`/`epoch`).
    """

    kind: str
    url: str

    async def execute(self, query: str, *args: Any) -> None:
        raise NotImplementedError

    async def executemany(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def fetch(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def insert_job(self, display_name: str, steps: int) -> tuple[int, float]:
        """Insert one job in its own committed transaction: (id, time.time() right after the commit)."""
        raise NotImplementedError

    def stamp(self, at: float) -> Any:
        """A timestamp column value for unix time `at`."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def count(self, state: str) -> int:
        rows = await self.fetch("SELECT count(*) FROM tuning_jobs WHERE state = ?", state)
        return int(rows[0][0])

    async def insert_jobs(self, jobs: Sequence[tuple[str, int]]) -> float:
        """Insert (display_name, steps) jobs (see `job_data`) in one transaction; time.time() after the commit."""
        rows = [(name, job_data(steps), EPOCHS, EPOCHS) for name, steps in jobs]
        await self.executemany(INSERT_JOB, rows)
        return time.time()


def epoch(value: Any) -> float | None:
    """Unix seconds of a timestamp column value (SQLite text in UTC, or a PostgreSQL timestamptz)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


class SqliteDatabase(Database):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite+aiosqlite:///{path}"
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the shared connection

    async def open(self) -> SqliteDatabase:
        await upgrade(self.url)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=10000")
        return self

    def _c(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            return await asyncio.to_thread(work, self._c())

    async def execute(self, query: str, *args: Any) -> None:
        await self._run(lambda conn: conn.execute(query, args).close())

    async def executemany(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(query, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        await self._run(run)

    async def fetch(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        return await self._run(lambda conn: conn.execute(query, args).fetchall())

    async def insert_job(self, display_name: str, steps: int) -> tuple[int, float]:
        # On the event loop itself: a single autocommitted INSERT takes well under a millisecond, and a thread
        # hop would add its own delay before the time is taken.
        async with self._lock:
            cursor = self._c().execute(INSERT_JOB + " RETURNING id", (display_name, job_data(steps), EPOCHS, EPOCHS))
            job_id = int(cursor.fetchone()[0])
            cursor.close()
            return job_id, time.time()

    def stamp(self, at: float) -> Any:
        return datetime.fromtimestamp(at, UTC).strftime(_SQLITE_TIME)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class PostgresDatabase(Database):
    kind = "postgres"

    def __init__(self, admin_url: str) -> None:
        admin = make_url(admin_url)
        self.admin = admin.set(drivername="postgresql")
        self.name = f"bench_tunekeeper_{os.getpid()}_{next(_numbers)}"
        self.url = admin.set(drivername="postgresql+asyncpg", database=self.name).render_as_string(hide_password=False)
        self._conn: Any = None

    @staticmethod
    def _dsn(url: URL) -> str:
        return url.render_as_string(hide_password=False)

    async def open(self) -> PostgresDatabase:
        admin = await asyncpg.connect(self._dsn(self.admin), timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{self.name}" TEMPLATE template0')
        finally:
            await admin.close()
        await upgrade(self.url)
        self._conn = await asyncpg.connect(self._dsn(self.admin.set(database=self.name)), timeout=10)
        return self

    @staticmethod
    def _sql(query: str) -> str:
        numbers = itertools.count(1)
        return "".join(f"${next(numbers)}" if part == "?" else part for part in _split_placeholders(query))

    async def execute(self, query: str, *args: Any) -> None:
        await self._conn.execute(self._sql(query), *args)

    async def executemany(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self._conn.transaction():
            await self._conn.executemany(self._sql(query), rows)

    async def fetch(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self._conn.fetch(self._sql(query), *args)]

    async def insert_job(self, display_name: str, steps: int) -> tuple[int, float]:
        job_id = await self._conn.fetchval(
            self._sql(INSERT_JOB + " RETURNING id"), display_name, job_data(steps), EPOCHS, EPOCHS
        )
        return int(job_id), time.time()

    def stamp(self, at: float) -> Any:
        return datetime.fromtimestamp(at, UTC)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        admin = await asyncpg.connect(self._dsn(self.admin), timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await admin.close()


def _split_placeholders(query: str) -> list[str]:
    return [part for piece in query.split("?") for part in (piece, "?")][:-1]


@contextlib.asynccontextmanager
async def database(kind: str, directory: Path, postgres_admin_url: str | None) -> AsyncIterator[Database]:
    """A fresh migrated database of `kind` ("sqlite" or "postgres"), removed afterwards (PostgreSQL)."""
    db: Database
    if kind == "sqlite":
        db = await SqliteDatabase(directory / f"bench-{next(_numbers)}.db").open()
    else:
        if postgres_admin_url is None:
            raise BenchError("no PostgreSQL server")
        db = await PostgresDatabase(postgres_admin_url).open()
    try:
        yield db
    finally:
        await db.close()


async def find_postgres(named: str | None) -> tuple[str | None, str]:
    """The admin url of a PostgreSQL server to use, or None, and a note saying which (or why none).

    Order: --postgres-url, $TUNEKEEPER_TEST_POSTGRES_URL, then 127.0.0.1:5432 (user postgres, trust auth,
    database test or postgres).
    """
    candidates: list[tuple[str, str]] = []
    if named:
        candidates.append((named, "--postgres-url"))
    elif os.environ.get("TUNEKEEPER_TEST_POSTGRES_URL"):
        candidates.append((os.environ["TUNEKEEPER_TEST_POSTGRES_URL"], "TUNEKEEPER_TEST_POSTGRES_URL"))
    else:
        for database_name in ("test", "postgres"):
            candidates.append((f"postgresql://postgres@127.0.0.1:5432/{database_name}", "127.0.0.1:5432"))
    errors = []
    for url, source in candidates:
        try:
            conn = await asyncpg.connect(
                make_url(url).set(drivername="postgresql").render_as_string(hide_password=False), timeout=5
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            errors.append(f"{source}: {' '.join(str(exc).split())[:120] or type(exc).__name__}")
            continue
        version = await conn.fetchval("SHOW server_version")
        await conn.close()
        return url, f"PostgreSQL {version} from {source}"
    return None, "no PostgreSQL server (" + "; ".join(errors) + "): PostgreSQL rows skipped"
