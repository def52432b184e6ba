"""Cross-site request forgery on the JSON API (issue 10, point 8).

A browser sends the session cookie with a request that another site starts, and lets that site
send a "simple" POST (a form, or `fetch` with `text/plain`) without asking first. So a request
to `/api/` that could change something (not GET, HEAD or OPTIONS), carries the session cookie and
no `Authorization` header is refused (403) unless

- its body, when it has one, is declared `application/json` (another site cannot send that
  without a CORS preflight, which this service never grants), and
- its `Origin`, when the browser sends one, is BASE_URL's (`settings.allowed_origins`).

A request without a body (whatever its `Content-Type`) still has its `Origin` checked: browsers
send one with every cross-site POST, form or `fetch`. So does a request without the cookie
(issue 25, point 1): a sign-in or sign-up posted from another site would otherwise sign the
visitor's browser into the attacker's account (login CSRF); `Sec-Fetch-Site: cross-site` is
refused the same way. Bearer tokens are not sent by browsers on
their own and are unaffected; the pages' forms are checked by `api.pages.base.same_origin`.
"""

from __future__ import annotations

from aiohttp import web

from api.keys import SESSION_COOKIE, SETTINGS
from require2fa.errors import NotAllowed

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def check(request: web.Request) -> None:
    """Refuses (403, by `api.errors.error_middleware`, which calls it for every request) an API
    write that another site could have sent: from another origin (`Origin`, `Sec-Fetch-Site`)
    whether or not a session cookie comes with it (a sign-in or sign-up from another site would
    sign the browser into the attacker's account), and a cookie-authenticated one whose body is
    not JSON."""
    if request.method in SAFE_METHODS or not request.path.startswith("/api/"):
        return
    if "Authorization" in request.headers:
        return
    foreign = from_another_site(request)
    if foreign is not None:
        raise NotAllowed("csrf", foreign)
    if SESSION_COOKIE not in request.cookies:
        return
    if request.can_read_body and request.content_type != "application/json":
        raise NotAllowed(
            "csrf", "A request signed in by cookie must send its body as application/json."
        )


def from_another_site(request: web.Request) -> str | None:
    """Why the browser says this request comes from another site (its `Origin` is not
    BASE_URL's, or `Sec-Fetch-Site: cross-site`), or None. The pages' forms ask it too."""
    settings = request.app[SETTINGS]
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/").lower() not in settings.allowed_origins:
        return f"Requests are accepted from {settings.origin} only."
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return f"Requests are accepted from {settings.origin} only."
    return None
