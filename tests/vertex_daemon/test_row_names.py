"""Names read back from a job's row are checked before anything is sent: a row whose endpoint or tuning job was
rewritten to name another location's (someone else's) is refused on its own, with no request to the service."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vertex_daemon.support import tune, vertex_settings, vx_emulator, vx_key_file
from tunekeeper.backends.port import NotOurs
from tunekeeper.daemon.service import open_context
from tunekeeper.db.tables import tuning_jobs
from tunekeeper.emulator import Emulator

__all__ = ["vx_emulator", "vx_key_file"]  # fixtures

FOREIGN_PARENT = "projects/tk-vertex-proof/locations/europe-west4"


def requests_sent(emulator: Emulator) -> int:
    return sum(emulator.stats()["requests"]["by_route"].values())


async def test_names_of_another_location_or_shape_are_never_sent(
    sqlite_url: str, vx_emulator: Emulator, vx_key_file: Path
) -> None:
    async with open_context(vertex_settings(sqlite_url, vx_emulator, vx_key_file)) as context:
        job = await tune(context, "mine")
        assert job.tuned_endpoint_name is not None
        answer = await context.backend.generate(job.tuned_endpoint_name, "1")  # its own endpoint answers
        assert isinstance(answer, str)
        async with context.store.engine.begin() as conn:
            await conn.execute(
                tuning_jobs.update()
                .where(tuning_jobs.c.id == job.id)
                .values(
                    operation_name=f"{FOREIGN_PARENT}/tuningJobs/1", tuned_endpoint_name=f"{FOREIGN_PARENT}/endpoints/1"
                )
            )
        rewritten = await context.store.get_job(job.id)
        assert rewritten is not None and rewritten.tuned_endpoint_name is not None
        sent = requests_sent(vx_emulator)
        with pytest.raises(NotOurs, match="not a tuning job in us-central1"):
            await context.backend.status(context.remote(rewritten))
        with pytest.raises(NotOurs, match="not a tuning job in us-central1"):
            await context.backend.remove(context.remote(rewritten))
        for endpoint in (rewritten.tuned_endpoint_name, "tunedModels/x", f"{FOREIGN_PARENT}/endpoints/1/../../x"):
            with pytest.raises(NotOurs, match="not an endpoint in us-central1"):
                await context.backend.generate(endpoint, "1")
        assert requests_sent(vx_emulator) == sent
