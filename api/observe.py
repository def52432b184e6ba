"""What the web process says about each request: one access-log line and the HTTP metrics.

`observe_middleware` is the outermost middleware: it gives the request its id (the caller's
`X-Request-ID`, else a new one) for every log line of the request, counts the request by route
and status with its duration in `require2fa_http_requests_total` and
`require2fa_http_request_duration_seconds`, and logs one `request` line. The accept links'
token segment (`/accept/{id}/{token}/`, `/api/0/accept-invite/{id}/{token}/`) never reaches a
log line or a label: the route label is the route's template, and the logged path has the token
replaced by `***`.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import Counter, Histogram

log = structlog.get_logger("require2fa.access")

REQUEST_ID = web.RequestKey("request_id", str)
UNMATCHED = "(unmatched)"
# /accept/{member_id}/{token}/ and /api/0/accept-invite/{member_id}/{token}/, matched or not.
_SECRET_PATH = re.compile(r"^(/accept/[^/]*/|/api/0/accept-invite/[^/]*/)[^/]+")
_SECRET_PREFIXES = ("/accept/", "/api/0/accept-invite/")

REQUESTS = Counter(
    "require2fa_http_requests",
    "HTTP requests answered, by method, route (its template) and status.",
    ["method", "route", "status"],
)
DURATION = Histogram(
    "require2fa_http_request_duration_seconds",
    "Time from the request's arrival at the application to its answer, by route.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def request_id(request: web.Request) -> str:
    """The request's id (set by `observe_middleware`)."""
    return request.get(REQUEST_ID) or ""


def loggable_path(path: str) -> str:
    """`path` with an accept link's token replaced by `***`."""
    if path.startswith(_SECRET_PREFIXES):
        return _SECRET_PATH.sub(r"\1***", path, count=1)
    return path


def _route(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return UNMATCHED
    return info.route.resource.canonical


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    rid = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
    if not rid.isprintable():
        rid = uuid.uuid4().hex
    request[REQUEST_ID] = rid
    structlog.contextvars.bind_contextvars(request_id=rid)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        seconds = time.perf_counter() - started
        route = _route(request)
        REQUESTS.labels(request.method, route, str(status)).inc()
        DURATION.labels(request.method, route).observe(seconds)
        log.info(
            "request",
            method=request.method,
            path=loggable_path(request.path),
            route=route,
            status=status,
            ms=round(seconds * 1000, 1),
            remote=request.remote,
            request_id=rid,
        )
        structlog.contextvars.unbind_contextvars("request_id")
