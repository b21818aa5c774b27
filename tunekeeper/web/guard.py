"""The status page's defences, applied to each of its responses and to every action.

- Host allowlist (`web.allowed_hosts`): a page on 127.0.0.1 can otherwise be read by another site through DNS
  rebinding (its name made to point at 127.0.0.1); a request naming another host is refused.
- Headers: a Content Security Policy with no inline script and no framing, `nosniff`, no referrer, no caching.
- Actions (POST): refused with 403 unless `web.actions` is on, the request is not cross-site (`Sec-Fetch-Site`,
  and `Origin` against the request's own host) and its token matches `web.token` (compared in constant time).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp import web

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # not no-referrer: a form would then send `Origin: null`
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
SAME_SITE_FETCHES = ("same-origin", "none")  # "none": typed in the address bar, a bookmark


class Refused(Exception):
    """A request the page will not serve: `status` and a one-line reason (no secret in it)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def host_name(host_header: str | None) -> str | None:
    """The name in a Host header, without the port: `[::1]:9465` -> `::1`; None if absent or malformed."""
    if not host_header:
        return None
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else None
    name, _, port = host.partition(":")
    if port and not port.isdigit():
        return None
    return name or None


def check_host(request: web.Request, allowed: Iterable[str]) -> None:
    name = host_name(request.headers.get("Host"))
    if name is None or name not in allowed:
        raise Refused(403, "this host name is not in web.allowed_hosts")


def check_action(request: web.Request, *, actions: bool, token: str, given: object) -> None:
    """Refuse a POST that the settings, the browser's site headers or the token do not allow."""
    if not actions:
        raise Refused(403, "this page is read-only (web.actions = false)")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in SAME_SITE_FETCHES:
        raise Refused(403, "cross-site request refused")
    origin = request.headers.get("Origin")
    if origin is not None:
        parts = urlsplit(origin)
        if origin == "null" or not parts.netloc or parts.netloc.lower() != request.headers.get("Host", "").lower():
            raise Refused(403, "cross-origin request refused")
    if not isinstance(given, str) or not token or not hmac.compare_digest(given.encode(), token.encode()):
        raise Refused(403, "wrong or missing token")


def secure(response: web.StreamResponse, *, cache: bool = False) -> web.StreamResponse:
    response.headers.update(SECURITY_HEADERS)
    if not cache:
        response.headers["Cache-Control"] = "no-store"
    return response
