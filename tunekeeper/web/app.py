"""The status page's routes, under `web.base_path`, for the daemon's HTTP server or `tunekeeper web`.

    /                    overview: jobs by state, in flight, waiting, recent failures, finished over time
    /jobs                the jobs list: ?state=...&q=...&label=key=value&before=ID (every view is a URL)
    /jobs/{id}           one job: request, progress, loss curve, results, timeline
    /jobs/{id}/cancel    POST, when web.actions is on (token, same-site)
    /jobs/{id}/retry     POST, likewise
    /api/...             the same views' live data (JSON), which the page's script polls
    /static/{name}       the script and the style sheet, shipped in the package

Pages are complete without script. Every view is read from a snapshot shared by all viewers (snapshot.py), so
open pages do not multiply the database's work; the script asks for the live data every `refresh_interval`
while its tab is visible, moves progress bars on between the daemon's readings, and fetches the page again
when what it shows has changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import jinja2
import sqlalchemy as sa
from aiohttp import web
from multidict import MultiMapping

from tunekeeper.config import Settings, WebSettings
from tunekeeper.db.engine import make_engine, make_read_engine
from tunekeeper.db.store import CancelOutcome, JobStore
from tunekeeper.db.views import LABEL_KEY, JobDetail, JobListPage, JobListView, Overview, StatusViews
from tunekeeper.logs import get_logger
from tunekeeper.states import RETRYABLE, State
from tunekeeper.web import present
from tunekeeper.web.guard import SECURITY_HEADERS, Refused, check_action, check_host, secure
from tunekeeper.web.snapshot import SharedSnapshots

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Clock = Callable[[], datetime]
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
MAX_SEARCH = 200
# A database that does not answer is a 503 for the page, not a traceback.
DATABASE_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, OSError, TimeoutError)
FINISHED_MAX_AGE = 60.0  # seconds: how old the finished jobs' counts and history may grow
NOTICES = {
    "requested": "Cancel requested: the daemon will cancel the job.",
    "already_requested": "A cancel was already requested.",
    "finished": "The job has finished: there is nothing to cancel.",
    "not_found": "No such job.",
    "retried": "Queued as a new job (this one).",
    "not_retryable": "Only failed, invalid or cancelled jobs can be retried.",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Loaded:
    """A view's data and when it was read."""

    data: Any
    at: datetime


class StatusPage:
    def __init__(
        self,
        settings: WebSettings,
        views: StatusViews,
        store: JobStore | None = None,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.views = views
        self.store = store if settings.actions else None
        self.clock = clock
        self.base = settings.base_path
        self.snapshots = SharedSnapshots(settings.refresh_interval)
        self._token = settings.token.get_secret_value()
        self._static = {
            name: (resources.files("tunekeeper.web").joinpath("static", name).read_bytes(), kind)
            for name, kind in STATIC_FILES.items()
        }
        self._version = hashlib.sha256(b"".join(body for body, _ in self._static.values())).hexdigest()[:12]
        self._templates = jinja2.Environment(
            loader=jinja2.PackageLoader("tunekeeper.web", "templates"),
            autoescape=True,  # everything a producer or the service wrote is shown as text
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._templates.globals.update(
            base=self.base,
            url=self.url,
            static=lambda name: f"{self.base}/static/{name}?v={self._version}",
            present=present,
            State=State,
            actions=settings.actions,
            interval_ms=int(settings.refresh_interval * 1000),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> StatusPage:
        """A page on engines of its own: a reader that never holds the daemon's write lock, and a writer for
        the actions when they are on."""
        views = StatusViews(make_read_engine(settings.database.url))
        store = JobStore(make_engine(settings.database.url, pool_size=1)) if settings.web.actions else None
        return cls(settings.web, views, store)

    async def close(self, _app: web.Application | None = None) -> None:
        await self.views.engine.dispose()
        if self.store is not None:
            await self.store.engine.dispose()

    def url(self, path: str, **query: object) -> str:
        """A link inside the page: base_path, the path, and the query without empty values."""
        pairs = [
            (key, item)
            for key, value in query.items()
            for item in (value if isinstance(value, list | tuple) else [value])
            if item not in (None, "")
        ]
        return f"{self.base}{path}" + (f"?{urlencode(pairs)}" if pairs else "")

    def mount(self, app: web.Application) -> None:
        """Add the routes to `app` (beside whatever it serves already) and close the engines with it."""
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/", self._overview),
            ("GET", "/jobs", self._jobs),
            ("GET", "/jobs/{job_id:[0-9]{1,18}}", self._job),
            ("POST", "/jobs/{job_id:[0-9]{1,18}}/cancel", self._cancel),
            ("POST", "/jobs/{job_id:[0-9]{1,18}}/retry", self._retry),
            ("GET", "/api/overview", self._api_overview),
            ("GET", "/api/jobs", self._api_jobs),
            ("GET", "/api/jobs/{job_id:[0-9]{1,18}}", self._api_job),
            ("GET", "/static/{name}", self._static_file),
        ]
        for method, path, handler in routes:
            full = f"{self.base}{path}" if path != "/" or not self.base else f"{self.base}/"
            app.router.add_route(method, full, self._guarded(handler))
        if self.base:
            app.router.add_get(self.base, self._guarded(self._to_slash))
        app.on_cleanup.append(self.close)

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                check_host(request, self.settings.allowed_hosts)
                response = await handler(request)
            except Refused as refused:
                log.info(
                    "web_request_refused",
                    method=request.method,
                    path=request.path,
                    status=refused.status,
                    reason=refused.reason,
                )
                response = web.Response(status=refused.status, text=refused.reason + "\n")
            except web.HTTPException as answer:  # redirects, 404s: the same headers
                answer.headers.update(SECURITY_HEADERS)
                raise
            except DATABASE_ERRORS:  # logged by the load
                response = web.Response(status=503, text="the database is unavailable; this page will try again\n")
            return secure(response, cache=request.path.startswith(f"{self.base}/static/"))

        return guarded

    # ---- loading (through the shared snapshots) ----

    async def _load(self, key: Any, load: Callable[[], Awaitable[Any]], max_age: float | None = None) -> Loaded:
        async def timed() -> Loaded:
            now = self.clock()
            try:
                return Loaded(await load(), now)
            except DATABASE_ERRORS as exc:  # also when no request waits for this load: say so
                log.warning("web_database_unavailable", view=str(key[0]), error=str(exc).splitlines()[0][:300])
                raise

        loaded: Loaded = await self.snapshots.get(key, timed, max_age=max_age)
        return loaded

    async def overview_data(self) -> tuple[Overview, datetime, datetime]:
        """The overview, when its jobs in flight were read and when its finished jobs were: those at most a minute
        before, since their count reads an index as big as the table."""
        live = await self._load(("overview",), self.views.live_overview)
        finished = await self._load(
            ("finished",),
            lambda: self.views.finished_overview(self.clock()),
            max(FINISHED_MAX_AGE, self.settings.refresh_interval),
        )
        return Overview.of(live.data, finished.data), live.at, finished.at

    async def list_data(self, view: JobListView) -> Loaded:
        return await self._load(("list", view), lambda: self.views.job_list(view))

    async def job_data(self, job_id: int) -> Loaded:
        return await self._load(("job", job_id), lambda: self.views.job_detail(job_id))

    # ---- pages ----

    def _render(self, template: str, status: int = 200, **context: Any) -> web.Response:
        body = self._templates.get_template(template).render(now=self.clock(), **context)
        return web.Response(status=status, text=body, content_type="text/html", charset="utf-8")

    async def _to_slash(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"{self.base}/")

    async def _overview(self, request: web.Request) -> web.StreamResponse:
        overview, read_at, counted_at = await self.overview_data()
        return self._render(
            "overview.html",
            overview=overview,
            read_at=read_at,
            counted_at=counted_at,
            histograms=present.histograms(overview.finished_by_hour, counted_at),
            fingerprint=_fingerprint(_overview_shape(overview)),
            live=self.url("/api/overview"),
        )

    async def _jobs(self, request: web.Request) -> web.StreamResponse:
        view = parse_filter(request.query)
        loaded = await self.list_data(view)
        page: JobListPage = loaded.data
        older = None
        if page.next_before is not None:
            older = self.url("/jobs", **_filter_query(view), before=page.next_before)
        return self._render(
            "jobs.html",
            view=view,
            page=page,
            older=older,
            newest=self.url("/jobs", **_filter_query(view)) if view.before else None,
            read_at=loaded.at,
            fingerprint=_fingerprint(_list_shape(page)),
            live=self.url("/api/jobs", **_filter_query(view), before=view.before),
        )

    async def _job(self, request: web.Request) -> web.StreamResponse:
        job_id = int(request.match_info["job_id"])
        loaded = await self.job_data(job_id)
        detail: JobDetail | None = loaded.data
        if detail is None:
            return self._render(
                "missing.html", status=404, job_id=job_id, fingerprint="", live=self.url(f"/api/jobs/{job_id}")
            )
        notice = NOTICES.get(request.query.get("notice", ""))
        return self._render(
            "job.html",
            detail=detail,
            job=detail.job,
            progress=present.progress(detail.job),
            dataset=present.dataset_size(detail.job.training_data),
            chart=present.loss_chart(detail.job.snapshots, detail.events),
            notice=notice,
            retryable=detail.job.state in RETRYABLE,
            read_at=loaded.at,
            fingerprint=_fingerprint(_job_shape(detail)),
            live=self.url(f"/api/jobs/{job_id}"),
        )

    # ---- live data ----

    def _live(self, shape: object, progress: list[present.Progress]) -> web.Response:
        body = {
            "fingerprint": _fingerprint(shape),
            "now_ms": present.millis(self.clock()),
            "progress": [item.as_json() for item in progress],
        }
        return web.json_response(body)

    async def _api_overview(self, request: web.Request) -> web.StreamResponse:
        overview, _read_at, _counted_at = await self.overview_data()
        return self._live(_overview_shape(overview), [present.progress(job) for job in overview.in_flight])

    async def _api_jobs(self, request: web.Request) -> web.StreamResponse:
        page: JobListPage = (await self.list_data(parse_filter(request.query))).data
        return self._live(_list_shape(page), [present.progress(job) for job in page.jobs])

    async def _api_job(self, request: web.Request) -> web.StreamResponse:
        detail: JobDetail | None = (await self.job_data(int(request.match_info["job_id"]))).data
        if detail is None:
            return web.json_response({"error": "no such job"}, status=404)
        return self._live(_job_shape(detail), [present.progress(detail.job)])

    async def _static_file(self, request: web.Request) -> web.StreamResponse:
        found = self._static.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, kind = found
        response = web.Response(body=body, content_type=kind, charset="utf-8")
        response.headers["Cache-Control"] = "public, max-age=86400"
        return response

    # ---- actions ----

    async def _checked_action(self, request: web.Request) -> tuple[JobStore, int]:
        form = await request.post() if self.settings.actions else {}
        check_action(request, actions=self.settings.actions, token=self._token, given=form.get("token"))
        assert self.store is not None
        return self.store, int(request.match_info["job_id"])

    def _after_action(self, job_id: int, notice: str) -> web.StreamResponse:
        self.snapshots.forget(("job", job_id))
        self.snapshots.forget(("overview",))
        self.snapshots.forget(("finished",))
        raise web.HTTPSeeOther(self.url(f"/jobs/{job_id}", notice=notice))

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        store, job_id = await self._checked_action(request)
        outcome, _state = await store.request_cancel(job_id)
        log.info("web_action", action="cancel", job_id=job_id, outcome=outcome.value)
        if outcome == CancelOutcome.NOT_FOUND:
            raise web.HTTPNotFound(text="no such job\n")
        return self._after_action(job_id, outcome.value)

    async def _retry(self, request: web.Request) -> web.StreamResponse:
        store, job_id = await self._checked_action(request)
        job = await store.get_job(job_id)
        if job is None:
            raise web.HTTPNotFound(text="no such job\n")
        if job.state not in RETRYABLE:
            log.info("web_action", action="retry", job_id=job_id, outcome="not_retryable")
            return self._after_action(job_id, "not_retryable")
        new_id = await store.copy_job(job_id)
        log.info("web_action", action="retry", job_id=job_id, outcome="retried", new_job_id=new_id)
        self.snapshots.forget(("job", job_id))
        return self._after_action(new_id or job_id, "retried")


def parse_filter(query: MultiMapping[str]) -> JobListView:
    """The jobs list's view from its URL; a value that makes no sense is a 400, saying which."""
    states: list[State] = []
    for value in query.getall("state", []):
        if not value:
            continue
        try:
            states.append(State(value))
        except ValueError:
            raise Refused(400, f"state: not one of {', '.join(s.value for s in State)}") from None
    search = query.get("q", "").strip()
    if len(search) > MAX_SEARCH:
        raise Refused(400, f"q: at most {MAX_SEARCH} characters")
    label = None
    label_text = query.get("label", "").strip()
    if label_text:
        key, sep, value = label_text.partition("=")
        if not sep or not LABEL_KEY.fullmatch(key.strip()):
            raise Refused(400, "label: key=value, the key of letters, digits, '_', '.' and '-'")
        label = (key.strip(), value.strip())
    before = query.get("before", "")
    if before and not (before.isdigit() and 0 < int(before) < 2**63):
        raise Refused(400, "before: a job id")
    return JobListView(tuple(dict.fromkeys(states)), search, label, int(before) if before else None)


def _filter_query(view: JobListView) -> dict[str, object]:
    return {
        "state": [state.value for state in view.states],
        "q": view.search,
        "label": f"{view.label[0]}={view.label[1]}" if view.label else "",
    }


def _fingerprint(shape: object) -> str:
    """A short digest of what a page shows apart from progress (which the script moves itself)."""
    return hashlib.sha256(json.dumps(shape, default=str, sort_keys=True).encode()).hexdigest()[:16]


def _row_shape(job: Any) -> list[object]:
    return [job.id, job.state.value, job.sub_state, job.cancel_requested, job.last_error, job.tuned_model_name]


def _overview_shape(overview: Overview) -> object:
    return [
        sorted((state.value, count) for state, count in overview.counts.items()),
        [_row_shape(job) for job in overview.in_flight],
        [job.id for job in overview.next_queued],
        [job.id for job in overview.recent_failures],
        sorted((hour.isoformat(), state.value, n) for (hour, state), n in overview.finished_by_hour.items()),
    ]


def _list_shape(page: JobListPage) -> object:
    return [[_row_shape(job) for job in page.jobs], page.next_before]


def _job_shape(detail: JobDetail) -> object:
    job = detail.job
    return [
        _row_shape(job),
        detail.events_total,
        detail.events[-1].id if detail.events else None,
        job.eval_score,
        job.purged_at,
        job.tuned_endpoint_name,
        len(present.loss_points(job.snapshots, detail.events)[1]),
    ]
