"""What the web process says about each request: one access-log line and the HTTP metrics.

`observe_middleware` is the outermost middleware: it finds the client's address behind our
proxies (`api.forwarded`), gives the request its id (the caller's
`X-Request-ID`, else a new one) for every log line of the request, counts the request by route
and status with its duration in `require2fa_http_requests_total` and
`require2fa_http_request_duration_seconds`, and logs one `request` line. The accept links'
token segment (`/accept/{id}/{token}/`, `/api/0/accept-invite/{id}/{token}/`) never reaches a
log line or a label: the route label is the route's template, and the logged path has the token
replaced by `***`.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import Counter, Histogram

from api.forwarded import as_client_sent

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


# Request ids: this process's random prefix and a counter (unique, and no system call per
# request as uuid4 makes).
_PROCESS_PREFIX = secrets.token_hex(8)
_SEQUENCE = itertools.count(1)


def new_request_id() -> str:
    return f"{_PROCESS_PREFIX}{next(_SEQUENCE):016x}"


_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
# The metrics' children of each (method, route, status) seen.
_CHILDREN: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def _count(method: str, route: str, status: int, seconds: float) -> None:
    """Adds the request to the metrics; each (method, route, status)'s children are looked up
    once (the labels() lookup costs more than the count). A method of no route's is counted as
    OTHER: a client that invents methods cannot make the metrics (or this cache) grow."""
    if method not in _METHODS:
        method = "OTHER"
    key = (method, route, status)
    children = _CHILDREN.get(key)
    if children is None:
        children = _CHILDREN[key] = (
            REQUESTS.labels(method, route, str(status)),
            DURATION.labels(method, route),
        )
    children[0].inc()
    children[1].observe(seconds)


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
    request = as_client_sent(request)
    rid = request.headers.get("X-Request-ID", "")[:64] or new_request_id()
    if not rid.isprintable():
        rid = new_request_id()
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
        _count(request.method, route, status, seconds)
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
