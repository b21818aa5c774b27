"""`/emulator/*`: control and introspection for tests and benchmarks. No faults, not counted; when the emulator
has API keys, every route but health needs one of them (app.authenticate_control).

- `GET  /emulator/health`   -> `{"status": "ok"}`
- `GET  /emulator/stats`    -> counters, tuning concurrency, per-model timelines (see README.md)
- `GET  /emulator/faults`   -> the current run-time settings
- `POST /emulator/faults`   -> change them; body keys (all optional): `faults` (merged into the current rates
  unless `replace_faults` is true), `replace_faults`, `latency` (`[low, high]` seconds, `"5ms..50ms"` or null),
  `retry_delay`, `fail_rate`, `diverge_rate`, `nul_rate`, `step_seconds`, `max_active_tuning`, `requests_per_minute`,
  `credentials_revoked` (true: every API key and token is refused, as after a revocation; false: accepted
  again); answers the settings
- `POST /emulator/reset`    -> forget models and counters, restart the seeded generators; answers `{}`
"""

from __future__ import annotations

from typing import Any

from tunekeeper.emulator.config import parse_latency
from tunekeeper.emulator.errors import ApiError
from tunekeeper.emulator.jsonbody import parse_lenient
from tunekeeper.emulator.state import EmulatorState

_SETTING_KEYS = frozenset(
    {
        "faults",
        "replace_faults",
        "latency",
        "retry_delay",
        "fail_rate",
        "diverge_rate",
        "nul_rate",
        "step_seconds",
        "max_active_tuning",
        "requests_per_minute",
        "credentials_revoked",
    }
)


def _latency(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_latency(value)
    if isinstance(value, list | tuple) and len(value) == 2:
        return (float(value[0]), float(value[1]))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (float(value), float(value))
    raise ValueError(f"latency must be [low, high] seconds, a string like 5ms..50ms, or null; got {value!r}")


def apply_settings(state: EmulatorState, raw: bytes) -> dict[str, Any]:
    body = parse_lenient(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise ApiError("INVALID_ARGUMENT", "The body must be a JSON object.")
    unknown = set(body) - _SETTING_KEYS
    if unknown:
        raise ApiError(
            "INVALID_ARGUMENT",
            f"Unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_SETTING_KEYS))}.",
        )
    changes: dict[str, Any] = {key: body[key] for key in body if key not in {"faults", "latency"}}
    try:
        if "faults" in body:
            if not isinstance(body["faults"], dict):
                raise ValueError("faults must be an object of kind -> rate")
            changes["faults"] = {str(kind): float(rate) for kind, rate in body["faults"].items()}
        if "latency" in body:
            changes["latency"] = _latency(body["latency"])
        state.configure(**changes)
    except (TypeError, ValueError) as exc:
        raise ApiError("INVALID_ARGUMENT", str(exc)) from None
    return state.settings_json()


def handle_control(state: EmulatorState, method: str, path: str, raw: bytes) -> dict[str, Any]:
    if path == "/emulator/stats" and method == "GET":
        return state.stats_json()
    if path == "/emulator/faults" and method == "GET":
        return state.settings_json()
    if path == "/emulator/faults" and method == "POST":
        return apply_settings(state, raw)
    if path == "/emulator/reset" and method == "POST":
        state.reset()
        return {}
    if path == "/emulator/health" and method == "GET":
        return {"status": "ok"}
    raise ApiError("NOT_FOUND", f"No control method {method} {path}.")
