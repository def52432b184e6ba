"""Cross-site request forgery on the JSON API (issue 10, point 8).

A browser sends the session cookie with a request that another site starts, and lets that site
send a "simple" POST (a form, or `fetch` with `text/plain`) without asking first. So a request
to `/api/` that could change something (not GET, HEAD or OPTIONS), carries the session cookie and
no `Authorization` header is refused (403) unless

- its body, when it has one, is declared `application/json` (another site cannot send that
  without a CORS preflight, which this service never grants), and
- its `Origin`, when the browser sends one, is BASE_URL's (`settings.allowed_origins`).

A request without a body (whatever its `Content-Type`) still has its `Origin` checked: browsers
send one with every cross-site POST, form or `fetch`. Bearer tokens are not sent by browsers on
their own and are unaffected; the pages' forms are checked by `api.pages.base.same_origin`.
"""

from __future__ import annotations

from aiohttp import web

from api.keys import SESSION_COOKIE, SETTINGS
from require2fa.errors import NotAllowed

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def check(request: web.Request) -> None:
    """Refuses (403, by `api.errors.error_middleware`, which calls it for every request) a
    cookie-authenticated API write that another site could have sent."""
    if request.method in SAFE_METHODS or not request.path.startswith("/api/"):
        return
    if "Authorization" in request.headers or SESSION_COOKIE not in request.cookies:
        return
    if request.can_read_body and request.content_type != "application/json":
        raise NotAllowed(
            "csrf", "A request signed in by cookie must send its body as application/json."
        )
    origin = request.headers.get("Origin")
    settings = request.app[SETTINGS]
    if origin is not None and origin.rstrip("/").lower() not in settings.allowed_origins:
        raise NotAllowed(
            "csrf", f"Requests signed in by cookie are accepted from {settings.origin} only."
        )
