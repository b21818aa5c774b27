"""Vertex AI's tuning-job methods under `/v1/` and `/v1beta1/` for any `projects/{p}/locations/{l}`: path
template, route names and handlers. Every route demands a bearer token this emulator issued (require_bearer)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from tunekeeper.emulator.jsonbody import parse_body
from tunekeeper.emulator.oauth.tokens import require_bearer
from tunekeeper.emulator.pages import page_size, paginate
from tunekeeper.emulator.routing import Call, Counter, Handler, Resolved, Route
from tunekeeper.emulator.vertex.filters import job_filter
from tunekeeper.emulator.vertex.render import tuning_job_json
from tunekeeper.emulator.vertex.validation import parse_create

if TYPE_CHECKING:
    from tunekeeper.emulator.state import EmulatorState


def _job_name(call: Call) -> str:
    return f"{call.params['parent']}/tuningJobs/{call.params['job']}"


def create_job(state: EmulatorState, call: Call) -> dict[str, Any]:
    version = call.params["version"]
    request = parse_create(parse_body(call.body), version, state.storage, state.config.vertex_base_models)
    job = state.vertex.create(call.params["parent"], request, call.now)
    state.stats.tuning_create_accepted(label_keys(request.labels))
    return tuning_job_json(job, call.now, version, call.int_enums)


def get_job(state: EmulatorState, call: Call) -> dict[str, Any]:
    job = state.vertex.get(_job_name(call), call.now)
    return tuning_job_json(job, call.now, call.params["version"], call.int_enums)


def list_jobs(state: EmulatorState, call: Call) -> dict[str, Any]:
    parent = call.params["parent"]
    size = page_size(call.query_value("pageSize", "page_size"))
    filter_text = call.query.get("filter")
    keep = job_filter(filter_text, call.now)
    page = paginate(
        state.vertex.under(parent, call.now),
        keep,
        size,
        call.query_value("pageToken", "page_token"),
        ("tuningJobs", parent, str(size), filter_text or ""),
    )
    body: dict[str, Any] = {}
    if page.items:
        version = call.params["version"]
        body["tuningJobs"] = [tuning_job_json(job, call.now, version, call.int_enums) for job in page.items]
    if page.next_token:
        body["nextPageToken"] = page.next_token
    return body


def cancel_job(state: EmulatorState, call: Call) -> dict[str, Any]:
    parse_body(call.body)  # empty or `{}` by the API's definition; anything else must at least be valid JSON
    state.vertex.cancel(_job_name(call), call.now)
    return {}


def label_keys(labels: dict[str, Any]) -> list[str]:
    """`KEY=VALUE` for each label, as the stats count creates by label."""
    return [f"{key}={value}" for key, value in labels.items() if isinstance(key, str) and isinstance(value, str)]


def _count_create(state: EmulatorState, call: Call) -> None:
    # Before the fault draw and before any check: a body that is not even JSON counts, without labels.
    labels: dict[str, Any] = {}
    try:
        body = json.loads(call.body)
    except (UnicodeDecodeError, ValueError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("labels"), dict):
        labels = body["labels"]
    state.stats.tuning_create_attempted(label_keys(labels))


def _count_get(state: EmulatorState, call: Call) -> None:
    state.stats.tuning_job_gets[_job_name(call)] += 1


def _route(name: str, handler: Handler, reads_body: bool = False, count: Counter | None = None) -> Route:
    return Route(name, handler, require_bearer, reads_body=reads_body, count=count)


# (kind of path, verb after ":", HTTP method) -> route; every route is served under both versions.
ROUTES: dict[tuple[str, str, str], Route] = {
    ("collection", "", "POST"): _route("tuningJobs.create", create_job, True, _count_create),
    ("collection", "", "GET"): _route("tuningJobs.list", list_jobs),
    ("job", "", "GET"): _route("tuningJobs.get", get_job, count=_count_get),
    ("job", "cancel", "POST"): _route("tuningJobs.cancel", cancel_job, True),
}

_PATH = re.compile(
    r"^/(?P<version>v1beta1|v1)/(?P<parent>projects/[^/:]+/locations/[^/:]+)/tuningJobs"
    r"(?:/(?P<job>[^/:]+))?(?::(?P<verb>[A-Za-z]+))?$"
)


class VertexTuningSurface:
    """`/v1/projects/P/locations/L/tuningJobs...` and the same under `/v1beta1/`."""

    def resolve(self, method: str, path: str, raw_path: str) -> Resolved | None:
        match = _PATH.match(path)
        if match is None:
            return None
        job = match["job"] or ""
        route = ROUTES.get(("job" if job else "collection", match["verb"] or "", method))
        if route is None:
            return None
        return Resolved(route, {"version": match["version"], "parent": match["parent"], "job": job})
