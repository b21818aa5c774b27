"""Screenshots of the status page for the README: `python -m tunekeeper.web.screenshots [--out docs]`.

Makes a SQLite database of demonstration jobs in a temporary directory (finished ones over the last week, some
failed, one tuning with its losses, one waiting for Vertex AI's quota, a queue), serves the page from it on
loopback, and photographs the overview and a job page with Chromium (Debian's, driven by Playwright: the test
extras) in the light and the dark colour scheme. Needs `playwright` and a Chromium (`--chromium PATH`).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from tunekeeper.config import Settings
from tunekeeper.db.engine import make_engine
from tunekeeper.db.migrate import upgrade
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.db.tables import job_events, tuning_jobs
from tunekeeper.web.app import StatusPage

PAIRS = [{"text_input": f"{n}", "output": f"{n + 1}"} for n in range(120)]
NAMES = ["support replies", "invoice fields", "sql from questions", "release notes", "ticket triage", "haiku"]


async def seed(url: str, now: datetime) -> int:
    """Demonstration jobs; the id of the one that is tuning."""
    rng = random.Random(7)
    engine = make_engine(url)
    store = JobStore(engine)
    try:
        for n in range(140):
            finished = now - timedelta(hours=rng.uniform(0.2, 7 * 24))
            job_id = await store.add_job(NewJob(f"{rng.choice(NAMES)} v{n}", training_data=PAIRS[:20]))
            state = "failed" if n % 11 == 0 else "cancelled" if n % 23 == 0 else "succeeded"
            error = (
                "INVALID_ARGUMENT: training_data: example 3: output longer than 5000 characters"
                if n % 11 == 0
                else None
            )
            await _set(
                engine,
                job_id,
                state=state,
                last_error=error,
                finished_at=finished,
                created_at=finished - timedelta(minutes=45),
                submitted_at=finished - timedelta(minutes=40),
                backend="gemini",
            )
        tuning = await store.add_job(
            NewJob(
                "support replies v141",
                training_data=PAIRS,
                epoch_count=5,
                base_model="gemini-2.5-flash",
                labels={"team": "support", "env": "prod"},
            )
        )
        losses = [
            {
                "step": step,
                "epoch": math.ceil(step / 60),
                "meanLoss": 2.4 * math.exp(-step / 90) + 0.15 + rng.uniform(0, 0.05),
            }
            for step in range(6, 181, 6)
        ]
        await _set(
            engine,
            tuning,
            state="tuning",
            backend="vertex",
            sub_state="TUNING",
            created_at=now - timedelta(minutes=32),
            submitted_at=now - timedelta(minutes=31),
            total_steps=300,
            completed_steps=180,
            progress_percent=60.0,
            mean_loss=losses[-1]["meanLoss"],
            anchor_at=now - timedelta(minutes=30),
            anchor_steps=0,
            progress_changed_at=now - timedelta(seconds=20),
            snapshots=losses,
            operation_name="projects/demo/locations/us-central1/tuningJobs/5190",
        )
        await _events(
            engine,
            tuning,
            now,
            [
                (31.2, "claimed", "queued", "submitting", {"attempt": 1}),
                (
                    31.0,
                    "accepted",
                    "submitting",
                    "tuning",
                    {"operation": "projects/demo/locations/us-central1/tuningJobs/5190"},
                ),
                *[
                    (
                        30.0 - 10 * epoch,
                        "progress",
                        None,
                        None,
                        _detail(
                            epoch=epoch, step=epoch * 60, mean_loss=round(2.4 * math.exp(-epoch * 60 / 90) + 0.17, 3)
                        ),
                    )
                    for epoch in (1, 2, 3)
                ],
            ],
        )
        waiting = await store.add_job(NewJob("ticket triage v142", training_data=PAIRS[:40]))
        await _set(
            engine,
            waiting,
            state="tuning",
            backend="vertex",
            sub_state="WAITING_FOR_QUOTA",
            submitted_at=now - timedelta(minutes=4),
        )
        for n in range(5):
            await store.add_job(NewJob(f"{NAMES[n]} v{143 + n}", training_data=PAIRS[:30], priority=5 if n == 0 else 0))
        return tuning
    finally:
        await engine.dispose()


def _detail(**values: object) -> dict[str, object]:
    return values


async def _set(engine: AsyncEngine, job_id: int, **values: object) -> None:
    async with engine.begin() as conn:
        await conn.execute(tuning_jobs.update().where(tuning_jobs.c.id == job_id).values(**values))


async def _events(
    engine: AsyncEngine,
    job_id: int,
    now: datetime,
    rows: list[tuple[float, str, str | None, str | None, dict[str, object]]],
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(job_events),
            [
                {
                    "job_id": job_id,
                    "at": now - timedelta(minutes=ago),
                    "kind": kind,
                    "from_state": a,
                    "to_state": b,
                    "detail": detail,
                }
                for ago, kind, a, b, detail in rows
            ],
        )


async def shoot(out: Path, chromium: str) -> list[Path]:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="tunekeeper-shots-") as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'demo.db'}"
        await upgrade(url)
        tuning = await seed(url, datetime.now(UTC))
        app = web.Application()
        page = StatusPage.from_settings(Settings(database={"url": url}))
        page.mount(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        saved = []
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=chromium, headless=True)
                for scheme in ("light", "dark"):
                    context = await browser.new_context(viewport={"width": 1200, "height": 900}, color_scheme=scheme)
                    tab = await context.new_page()
                    for name, path in (("overview", "/"), ("job", f"/jobs/{tuning}")):
                        await tab.goto(base + path)
                        await tab.locator("html[data-polls]").wait_for(state="attached")  # the script ran
                        target = out / f"status-{name}-{scheme}.png"
                        await tab.screenshot(path=str(target), full_page=True)
                        saved.append(target)
                    await context.close()
                await browser.close()
        finally:
            await runner.cleanup()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunekeeper.web.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the PNG files go (default: docs)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser (default: /usr/bin/chromium)")
    args = parser.parse_args(argv)
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("screenshots: needs playwright (pip install -e '.[test]')", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(shoot(args.out, args.chromium)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
