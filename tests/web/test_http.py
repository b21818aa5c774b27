"""The status page over HTTP: what it shows, its headers, and what it refuses."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from tests.web.conftest import TOKEN, PageClient
from tunekeeper.db.records import NewJob
from tunekeeper.db.store import JobStore
from tunekeeper.db.tables import tuning_jobs

XSS = "<img src=x onerror=alert(1)>"
EXAMPLES = [{"text_input": "12345", "output": "678"}, {"text_input": "ab", "output": "c"}]


async def _set(store: JobStore, job_id: int, **values: object) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(tuning_jobs.update().where(tuning_jobs.c.id == job_id).values(**values))


async def test_overview_shows_counts_in_flight_and_failures_with_strict_headers(
    page_client: PageClient, store: JobStore
) -> None:
    now = datetime.now(UTC)
    queued = await store.add_job(NewJob("waiting one", training_data=EXAMPLES))
    tuning = await store.add_job(NewJob("busy one", training_data=EXAMPLES))
    await _set(
        store,
        tuning,
        state="tuning",
        backend="vertex",
        sub_state="WAITING_FOR_QUOTA",
        submitted_at=now - timedelta(minutes=3),
    )
    failed = await store.add_job(NewJob("broken one", training_data=EXAMPLES))
    await _set(store, failed, state="failed", last_error="RESOURCE_EXHAUSTED: quota", finished_at=now)
    client, _page = await page_client()

    response = await client.get("/")
    body = await response.text()

    assert response.status == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert not re.search(r"<script(?![^>]*\bsrc=)", body), "an inline script"
    assert not re.search(r"\son\w+=", body), "an inline event handler"
    assert 'data-count="queued"><span class="n">1<' in body
    assert "tuning (waiting for quota)" in body
    assert "RESOURCE_EXHAUSTED: quota" in body
    assert f'href="/jobs/{queued}"' in body and f'href="/jobs/{failed}"' in body


async def test_a_producers_markup_is_shown_as_text(page_client: PageClient, store: JobStore) -> None:
    job_id = await store.add_job(NewJob(XSS, training_data=EXAMPLES, labels={"<b>k</b>": XSS}))
    await _set(store, job_id, last_error=XSS)
    client, _page = await page_client()

    for path in ("/", "/jobs", f"/jobs/{job_id}"):
        body = await (await client.get(path)).text()
        assert XSS not in body and "<b>k</b>" not in body, path
        assert "&lt;img src=x onerror=alert(1)&gt;" in body, path


async def test_job_page_shows_request_sizes_loss_curve_and_timeline_not_the_text(
    page_client: PageClient, store: JobStore
) -> None:
    job_id = await store.add_job(NewJob("curve", training_data=EXAMPLES, epoch_count=3, base_model="m-1"))
    snapshots = [{"step": step, "epoch": step // 10, "meanLoss": 3.0 / step} for step in range(1, 1001)]
    await _set(store, job_id, state="tuning", snapshots=snapshots, completed_steps=40, total_steps=100)
    client, _page = await page_client()

    body = await (await client.get(f"/jobs/{job_id}")).text()

    assert "2 examples, 11 characters (inline)" in body
    assert "12345" not in body  # the training text itself is never shown
    points = re.search(r'<polyline class="line" points="([^"]+)"', body)
    assert points is not None
    assert 2 < len(points.group(1).split()) <= 240  # downsampled on the server
    assert "1000 recorded points, drawn as 240 averages" in body
    assert "Timeline" in body and "m-1" in body


async def test_a_job_that_does_not_exist_is_a_404(page_client: PageClient) -> None:
    client, _page = await page_client()
    assert (await client.get("/jobs/999")).status == 404
    assert (await client.get("/api/jobs/999")).status == 404


async def test_another_host_name_is_refused(page_client: PageClient) -> None:
    client, _page = await page_client()
    for host in ("evil.example", "evil.example:80", "127.0.0.1.nip.io"):
        response = await client.get("/", headers={"Host": host})
        assert response.status == 403, host
    assert (await client.get("/", headers={"Host": "localhost:9465"})).status == 200


async def test_a_read_only_page_refuses_actions(page_client: PageClient, store: JobStore) -> None:
    job_id = await store.add_job(NewJob("keep me", training_data=EXAMPLES))
    client, _page = await page_client()

    body = await (await client.get(f"/jobs/{job_id}")).text()
    response = await client.post(f"/jobs/{job_id}/cancel", data={"token": TOKEN})

    assert "Cancel job" not in body
    assert response.status == 403
    job = await store.get_job(job_id)
    assert job is not None and not job.cancel_requested
    assert (await client.post(f"/jobs/{job_id}/retry", data={"token": TOKEN})).status == 403


async def test_cancel_needs_the_token_and_a_same_site_request(page_client: PageClient, store: JobStore) -> None:
    job_id = await store.add_job(NewJob("cancel me", training_data=EXAMPLES))
    client, _page = await page_client(actions=True)
    url = f"/jobs/{job_id}/cancel"
    origin = f"http://127.0.0.1:{client.port}"

    refused = [
        await client.post(url, data={}, allow_redirects=False),
        await client.post(url, data={"token": "wrong"}, allow_redirects=False),
        await client.post(url, data={"token": TOKEN}, headers={"Sec-Fetch-Site": "cross-site"}),
        await client.post(url, data={"token": TOKEN}, headers={"Origin": "http://evil.example"}),
        await client.post(url, data={"token": TOKEN}, headers={"Origin": "null"}),
    ]
    assert [response.status for response in refused] == [403] * 5
    job = await store.get_job(job_id)
    assert job is not None and not job.cancel_requested

    response = await client.post(
        url,
        data={"token": TOKEN},
        headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"},
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"] == f"/jobs/{job_id}?notice=requested"
    job = await store.get_job(job_id)
    assert job is not None and job.cancel_requested
    assert "cancel requested" in await (await client.get(response.headers["Location"])).text()


async def test_retry_queues_a_copy_of_a_failed_job(page_client: PageClient, store: JobStore) -> None:
    job_id = await store.add_job(NewJob("again", training_data=EXAMPLES))
    client, _page = await page_client(actions=True)
    busy = await client.post(f"/jobs/{job_id}/retry", data={"token": TOKEN}, allow_redirects=False)
    await _set(store, job_id, state="failed")

    response = await client.post(f"/jobs/{job_id}/retry", data={"token": TOKEN}, allow_redirects=False)

    assert busy.headers["Location"] == f"/jobs/{job_id}?notice=not_retryable"
    assert response.status == 303
    new_id = int(response.headers["Location"].split("/")[-1].split("?")[0])
    assert new_id != job_id
    copy = await store.get_job(new_id)
    assert copy is not None and copy.display_name == "again" and copy.state.value == "queued"


async def test_under_a_prefix_every_link_and_asset_starts_with_it(page_client: PageClient, store: JobStore) -> None:
    job_id = await store.add_job(NewJob("prefixed", training_data=EXAMPLES))
    client, _page = await page_client(base_path="/tools/tunekeeper/")

    body = await (await client.get("/tools/tunekeeper/")).text()
    links = re.findall(r'(?:href|src|action|data-live)="([^"]*)"', body)

    assert links and all(link.startswith("/tools/tunekeeper/") for link in links), links
    assert f"/tools/tunekeeper/jobs/{job_id}" in links
    script = await client.get("/tools/tunekeeper/static/app.js")
    assert script.status == 200 and script.content_type == "text/javascript"
    assert (await client.get("/")).status == 404
    assert (await client.get("/tools/tunekeeper", allow_redirects=False)).headers["Location"] == "/tools/tunekeeper/"


async def test_the_token_appears_on_no_page(page_client: PageClient, store: JobStore) -> None:
    job_id = await store.add_job(NewJob("secretive", training_data=EXAMPLES))
    client, _page = await page_client(actions=True)
    for path in ("/", "/jobs", f"/jobs/{job_id}", "/api/overview", f"/api/jobs/{job_id}", "/static/app.js"):
        body = await (await client.get(path)).text()
        assert TOKEN not in body, path


async def test_the_jobs_list_filters_by_state_name_and_label_with_keyset_pages(
    page_client: PageClient, store: JobStore
) -> None:
    ids = [
        await store.add_job(NewJob(f"Alpha {n}" if n % 2 else f"beta {n}", labels={"team": "ml" if n < 4 else "ops"}))
        for n in range(8)
    ]
    await _set(store, ids[1], state="failed")
    await _set(store, ids[3], state="tuning")
    client, page = await page_client()

    def rows(body: str) -> list[int]:
        return [int(found) for found in re.findall(r'<tr data-row="(\d+)"', body)]

    assert rows(await (await client.get("/jobs?q=ALPHA")).text()) == [ids[7], ids[5], ids[3], ids[1]]
    assert rows(await (await client.get("/jobs?state=failed&state=tuning")).text()) == [ids[3], ids[1]]
    assert rows(await (await client.get("/jobs?label=team%3Dml&q=alpha")).text()) == [ids[3], ids[1]]
    assert rows(await (await client.get(f"/jobs?before={ids[2]}")).text()) == [ids[1], ids[0]]
    assert (await client.get("/jobs?state=nonsense")).status == 400
    assert (await client.get("/jobs?label=bad%20key%3Dx")).status == 400

    # the pages themselves, through the store's view: newest first, each page starting where the last ended
    from tunekeeper.db.views import JobListView

    first = await page.views.job_list(JobListView(limit=3))
    second = await page.views.job_list(JobListView(limit=3, before=first.next_before))
    assert [job.id for job in first.jobs + second.jobs] == ids[::-1][:6]
    # a search looks through a bounded window of ids per page and says where it stopped
    windowed = await page.views.job_list(JobListView(search="alpha", window=3))
    assert [job.id for job in windowed.jobs] == [ids[7], ids[5]]
    assert windowed.searched_down_to == ids[7] + 1 - 3 and windowed.next_before == windowed.searched_down_to


async def test_many_viewers_share_one_snapshot(page_client: PageClient, store: JobStore) -> None:
    await store.add_job(NewJob("watched", training_data=EXAMPLES))
    client, page = await page_client(refresh_interval=60)
    await client.get("/api/overview")
    per_load = page.views.queries

    answers = await asyncio.gather(*(client.get("/api/overview") for _ in range(50)))
    pages = await asyncio.gather(*(client.get("/") for _ in range(20)))

    assert {answer.status for answer in answers + pages} == {200}
    assert page.views.queries == per_load  # 70 more viewers, no more queries
    assert page.snapshots.loads == 2  # the jobs in flight, and the finished jobs' counts and history


async def test_live_data_carries_the_reading_and_rate_for_the_estimate(
    page_client: PageClient, store: JobStore
) -> None:
    now = datetime.now(UTC)
    job_id = await store.add_job(NewJob("moving", training_data=EXAMPLES))
    await _set(
        store,
        job_id,
        state="tuning",
        completed_steps=30,
        total_steps=100,
        progress_percent=30.0,
        anchor_at=now - timedelta(seconds=20),
        anchor_steps=10,
        progress_changed_at=now,
    )
    client, _page = await page_client()

    live = await (await client.get(f"/api/jobs/{job_id}")).json()

    (progress,) = live["progress"]
    assert progress["rate"] == 1.0  # 20 steps in 20 s
    assert progress["completed"] == 30 and progress["total"] == 100
    assert progress["finish_ms"] - progress["reading_ms"] == 70_000
    assert live["fingerprint"] and live["now_ms"]


async def test_the_read_engine_does_not_hold_the_write_lock(database_url: str, store: JobStore) -> None:
    from tunekeeper.db.engine import make_read_engine
    from tunekeeper.db.views import StatusViews

    views = StatusViews(make_read_engine(database_url))
    try:
        async with views.engine.connect() as reader:
            await reader.execute(sa.select(tuning_jobs.c.id).limit(1))  # a read transaction stays open
            job_id = await asyncio.wait_for(store.add_job(NewJob("written meanwhile")), 3)
        assert job_id
    finally:
        await views.engine.dispose()


async def test_a_database_that_does_not_answer_is_a_503() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from tunekeeper.config import Settings
    from tunekeeper.web.app import StatusPage

    app = web.Application()  # nothing listens on port 1
    StatusPage.from_settings(Settings(database={"url": "postgresql+asyncpg://tk@127.0.0.1:1/tk"})).mount(app)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.get("/")
        assert response.status == 503
        assert "unavailable" in await response.text()
