"""One daemon per SQLite file: the lock on `<database>.lock`, its holder named to whoever is refused, and its end
with the holder's process, however that ends."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from tests.waiting import wait_until
from tunekeeper.db.filelock import DatabaseInUse, holding, lock_path
from tunekeeper.exits import EX_UNAVAILABLE

HOLD_AND_WAIT = """
import sys, time
from pathlib import Path
from tunekeeper.db.filelock import holding
with holding(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_a_second_holder_is_refused_with_the_first_named(tmp_path: Path) -> None:
    database = tmp_path / "tunekeeper.db"
    with holding(database):
        record = json.loads(lock_path(database).read_text())
        assert record["pid"] == os.getpid()
        with pytest.raises(DatabaseInUse) as refused, holding(database):
            pass
    message = str(refused.value)
    assert message.startswith(f"database: {database} is in use by another tunekeeper daemon (pid {os.getpid()} on ")
    assert socket.gethostname() in message
    assert record["started_at"] in message
    assert "\n" not in message
    assert refused.value.status == EX_UNAVAILABLE
    with holding(database):  # let go at the end of the block
        pass
    assert lock_path(database).read_text() == ""  # and no record of a holder left behind


def test_an_unreadable_record_still_refuses(tmp_path: Path) -> None:
    database = tmp_path / "tunekeeper.db"
    with holding(database):
        lock_path(database).write_text("\x1b[2Jnot a record")
        with pytest.raises(DatabaseInUse, match=r"\(holder unknown\)"), holding(database):
            pass


async def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    database = tmp_path / "tunekeeper.db"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD_AND_WAIT, str(database), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        async with asyncio.timeout(30):
            assert await holder.stdout.readline() == b"holding\n"
        with pytest.raises(DatabaseInUse, match=f"pid {holder.pid} "), holding(database):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no chance to let go by itself
        await holder.wait()

    def free() -> bool:
        try:
            with holding(database):
                return True
        except DatabaseInUse:
            return False

    await wait_until(free, within=10, message="the lock to be free")
