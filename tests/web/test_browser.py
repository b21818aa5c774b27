"""The status page in a real browser: Debian's Chromium driven by Playwright, a real daemon, the emulator.

Skipped with a reason where Chromium or Playwright is missing, unless TUNEKEEPER_REQUIRE_BROWSER=1 (set by
.ci/run) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.harness import DaemonProcess, daemon_environment
from tests.waiting import wait_until
from tunekeeper.db.engine import make_engine
from tunekeeper.emulator import Emulator, EmulatorConfig

CHROMIUM = os.environ.get("TUNEKEEPER_TEST_CHROMIUM", "/usr/bin/chromium")
TOKEN = "browser-token-0b7d41e6"
XSS = "<img src=x onerror=alert(1)>"
PAIRS = [{"text_input": str(n), "output": str(n + 1)} for n in range(20)]


def _browser_missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


_MISSING = _browser_missing()
if _MISSING and os.environ.get("TUNEKEEPER_REQUIRE_BROWSER") == "1":
    pytest.fail(f"TUNEKEEPER_REQUIRE_BROWSER=1 but {_MISSING}", pytrace=False)
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

if _MISSING is None:
    from playwright.async_api import Browser, Dialog, Page, async_playwright


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    # 20 pairs, batch 1, a few epochs: a job of tens of steps, each long enough to watch a bar move.
    async with Emulator(EmulatorConfig(host="127.0.0.1", port=0, step_seconds=0.05, log_requests=False)) as emu:
        yield emu


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        await chromium.close()


Daemon = Callable[..., Awaitable[tuple[DaemonProcess, str]]]


@pytest.fixture
async def daemon(sqlite_url: str, emulator: Emulator, tmp_path: Path) -> AsyncIterator[Daemon]:
    """`await daemon(WEB__ACTIONS="true")`: a running daemon whose status page refreshes every 0.2 s; its URL."""
    started: list[DaemonProcess] = []

    async def start(**web: str) -> tuple[DaemonProcess, str]:
        extra = {"TUNEKEEPER_WEB__REFRESH_INTERVAL": "0.2", **{f"TUNEKEEPER_{k}": v for k, v in web.items()}}
        process = DaemonProcess(tmp_path, daemon_environment(sqlite_url, emulator.base_url, extra))
        await process.start()
        started.append(process)
        (line,) = process.events("daemon_started")
        return process, str(line["http"])

    yield start
    for process in started:
        await process.__aexit__(None, None, None)


async def _insert(database_url: str, name: str, **columns: Any) -> int:
    """A job as a producer writes it: a plain INSERT."""
    values = {"display_name": name, "training_data": PAIRS, "batch_size": 1, "epoch_count": 3, **columns}
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            table = sa.table(
                "tuning_jobs",
                *(sa.column(key, sa.JSON if key in ("training_data", "labels") else None) for key in values),
            )
            result = await conn.execute(sa.insert(table).values(**values).returning(sa.column("id")))
            job_id: int = result.scalar_one()
    finally:
        await engine.dispose()
    return job_id


async def _open(browser: Browser, url: str) -> tuple[Page, list[Dialog]]:
    page = await browser.new_page()
    dialogs: list[Dialog] = []

    async def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    await page.goto(url)
    await page.evaluate("window.__stillTheSamePage = true")  # gone if the page reloads
    return page, dialogs


async def _same_page(page: Page) -> bool:
    return bool(await page.evaluate("window.__stillTheSamePage === true"))


async def test_a_job_inserted_by_sql_appears_and_its_bar_advances_without_a_reload(
    daemon: Daemon, browser: Browser, sqlite_url: str, emulator: Emulator
) -> None:
    emulator.configure(step_seconds=0.1)  # 60 steps: about six seconds of tuning
    _process, url = await daemon()
    page, _dialogs = await _open(browser, f"{url}/jobs")

    job_id = await _insert(sqlite_url, "watched from the browser")
    row = page.locator(f'tr[data-row="{job_id}"]')
    await row.wait_for(timeout=15_000)
    await page.goto(f"{url}/jobs/{job_id}")
    await page.evaluate("window.__stillTheSamePage = true")

    bar = page.locator(f'.progress-section [data-job="{job_id}"] svg')

    async def filled() -> float:
        truth = float(await bar.locator("rect.truth").get_attribute("width") or 0)
        estimate = float(await bar.locator("rect.estimate").get_attribute("width") or 0)
        return truth + estimate

    first = await wait_until(filled, within=15, message="the bar to show progress")
    assert first < 100
    await wait_until(lambda: _grew(filled, first), within=15, message="the bar to advance")
    await wait_until(lambda: page.locator(".state-succeeded").count(), within=20, message="the job to succeed")
    assert await _same_page(page)
    assert await page.locator("svg.loss-chart circle.point").count() >= 1
    assert await page.locator(".timeline tbody tr").count() >= 3  # claimed, accepted, progress ..., succeeded


async def _grew(measure: Callable[[], Awaitable[float]], than: float) -> bool:
    return await measure() > than


async def test_cancel_works_with_the_token_and_is_refused_without(
    daemon: Daemon, browser: Browser, sqlite_url: str, emulator: Emulator
) -> None:
    emulator.configure(step_seconds=5.0)  # minutes of tuning: still running when cancelled
    _process, url = await daemon(WEB__ACTIONS="true", WEB__TOKEN=TOKEN)
    job_id = await _insert(sqlite_url, "cancel me in the browser")
    page, _dialogs = await _open(browser, f"{url}/jobs/{job_id}")
    await wait_until(lambda: page.locator(".state-tuning").count(), within=15, message="the job to tune")

    await page.fill("form[action$='/cancel'] input[name=token]", "not-the-token")
    async with page.expect_response(lambda r: r.url.endswith("/cancel")) as refused:
        await page.click("form[action$='/cancel'] button")
    assert (await refused.value).status == 403
    assert "wrong or missing token" in await page.content()

    await page.goto(f"{url}/jobs/{job_id}")
    await page.fill("form[action$='/cancel'] input[name=token]", TOKEN)
    await page.click("form[action$='/cancel'] button")
    await page.locator(".notice").wait_for()
    assert "Cancel requested" in (await page.locator(".notice").inner_text())
    await page.evaluate("window.__stillTheSamePage = true")
    await wait_until(lambda: page.locator(".state-cancelled").count(), within=20, message="the job to be cancelled")
    assert await _same_page(page)


async def test_a_name_with_markup_stays_text_and_runs_nothing(
    daemon: Daemon, browser: Browser, sqlite_url: str
) -> None:
    job_id = await _insert(sqlite_url, XSS, labels={"team": XSS})
    _process, url = await daemon()
    for path in ("/", "/jobs", f"/jobs/{job_id}"):
        page, dialogs = await _open(browser, f"{url}{path}")
        await page.get_by_text(XSS).first.wait_for()
        assert await page.locator("main img").count() == 0, path
        await wait_until(lambda page=page: page.evaluate("document.documentElement.dataset.polls >= 2"), within=10)
        assert dialogs == [], path
        await page.close()


async def test_the_page_works_under_a_prefix(daemon: Daemon, browser: Browser, sqlite_url: str) -> None:
    job_id = await _insert(sqlite_url, "behind a proxy")
    _process, url = await daemon(WEB__BASE_PATH="/ops/tunekeeper")
    failed: list[str] = []
    page = await browser.new_page()
    # (a live request cut short by the navigation is no failure: only answers count)
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)

    await page.goto(f"{url}/ops/tunekeeper/")
    await page.click("header nav >> text=Jobs")
    await page.wait_for_url(f"{url}/ops/tunekeeper/jobs")
    await page.click(f"a[href='/ops/tunekeeper/jobs/{job_id}']")
    await page.wait_for_url(f"{url}/ops/tunekeeper/jobs/{job_id}")
    # the script came from under the prefix and its live requests go there too
    await wait_until(lambda: page.evaluate("document.documentElement.dataset.polls >= 2"), within=10)
    assert failed == []
    assert await page.evaluate("getComputedStyle(document.body).margin") == "0px"  # the style sheet loaded


async def _polls(page: Page) -> int:
    return int(await page.evaluate("Number(document.documentElement.dataset.polls || 0)"))


async def _set_visibility(page: Page, state: str) -> None:
    await page.evaluate(
        """state => {
            Object.defineProperty(document, "visibilityState", {configurable: true, get: () => state});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        state,
    )


async def test_a_hidden_tab_asks_for_nothing_until_it_is_shown_again(daemon: Daemon, browser: Browser) -> None:
    _process, url = await daemon()
    hidden, _ = await _open(browser, f"{url}/")
    watching, _ = await _open(browser, f"{url}/")
    await wait_until(lambda: _polls(hidden), within=10, message="the first page to poll")

    await _set_visibility(hidden, "hidden")
    asked = await _polls(hidden)
    seen = await _polls(watching)
    # four intervals pass, as the visible page counts them
    await wait_until(lambda: _at_least(_polls(watching), seen + 4), within=10, message="four polls of the other page")
    assert await _polls(hidden) == asked

    await _set_visibility(hidden, "visible")
    await wait_until(lambda: _at_least(_polls(hidden), asked + 1), within=5, message="polls to resume")


async def _at_least(value: Awaitable[int], floor: int) -> bool:
    return await value >= floor


async def test_the_pages_read_without_javascript(daemon: Daemon, browser: Browser, sqlite_url: str) -> None:
    job_id = await _insert(sqlite_url, "no script needed")
    _process, url = await daemon()
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await page.goto(f"{url}/jobs")
    await page.click(f"a[href='/jobs/{job_id}']")
    await page.wait_for_url(f"{url}/jobs/{job_id}")
    assert "no script needed" in await page.locator("h1").inner_text()
    assert await page.locator(".timeline").count() == 1
    assert await page.evaluate("document.documentElement.dataset.polls") is None  # no script ran
    await context.close()
