"""JSON errors: every error answer is `{"detail": sentence, ...}`, never HTML or a traceback."""

from __future__ import annotations

from typing import Any, TypeVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ValidationError

from api import csrf
from api.jsonio import dumps
from api.limits import LIMIT_ERRORS, MAX_BODY_BYTES
from api.observe import REQUEST_ID, new_request_id
from require2fa import errors as domain

log = structlog.get_logger(__name__)
M = TypeVar("M", bound=BaseModel)

_DEFAULT_DETAIL = {
    400: "Bad request.",
    401: "Authentication credentials were not provided.",
    403: "You do not have permission to perform this action.",
    404: "The requested resource does not exist.",
    405: "Method not allowed.",
    409: "Conflict.",
    410: "Gone.",
    413: f"The request body is too large: at most {MAX_BODY_BYTES // 1024} KB.",
    429: "Too many requests.",
}


def api_error(status: int, detail: str | None = None, **extra: Any) -> web.HTTPException:
    """An exception to raise: answers `status` with a JSON body."""
    body = {"detail": detail or _DEFAULT_DETAIL.get(status, "Error."), **extra}
    exc = web.HTTPException(text=dumps(body), content_type="application/json")
    exc.set_status(status)
    return exc


# The one mapping of domain refusals to HTTP statuses (as `openapi.json` describes them).
_STATUS_OF: tuple[tuple[type[domain.DomainError], int], ...] = (
    (domain.Invalid, 400),
    (domain.NotSignedIn, 401),
    (domain.NotAllowed, 403),
    (domain.NotFound, 404),
    (domain.Conflict, 409),
    (domain.Gone, 410),
    (domain.TooMany, 429),
    (domain.Unavailable, 503),
)
# Codes that API answers carry as `"code"` (clients act on them).
PUBLIC_CODES = frozenset({"2fa-required", "sudo-required"})


def status_of(err: domain.DomainError) -> int:
    for kind, status in _STATUS_OF:
        if isinstance(err, kind):
            return status
    return 400


def from_domain(err: domain.DomainError) -> web.HTTPException:
    """The API's answer to a domain refusal."""
    if isinstance(err, domain.TooMany):
        return rate_limited(err.retry_after, err.detail)
    extra = {"code": err.code} if err.code in PUBLIC_CODES else {}
    if err.field is not None:  # about one input: as a validation error of that field
        summary = err.summary or "Invalid request."
        return api_error(status_of(err), summary, errors={err.field: [err.detail]})
    return api_error(status_of(err), err.detail, **extra)


def rate_limited(retry_after: int, detail: str) -> web.HTTPException:
    """429 with `Retry-After`; `detail` names the same wait (`require2fa.errors.TooMany`)."""
    exc = api_error(429, detail)
    exc.headers["Retry-After"] = str(max(1, retry_after))
    return exc


def validation_error(err: ValidationError) -> web.HTTPException:
    """400 with `errors` per field; a value over a size limit (`api.limits`) says so in `detail`."""
    errors: dict[str, list[str]] = {}
    detail = "Invalid request."
    for item in err.errors():
        field = ".".join(str(part) for part in item["loc"]) or "non_field_errors"
        errors.setdefault(field, []).append(item["msg"])
        if item["type"] in LIMIT_ERRORS and detail == "Invalid request.":
            detail = f"{field}: {item['msg']}"
    return api_error(400, detail, errors=errors)


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The JSON body validated against `model`; 400 with `errors` when it does not fit."""
    if not request.can_read_body:
        data: Any = {}
    elif request.content_type != "application/json" and "Authorization" not in request.headers:
        # A `text/plain` form from another site must not pass for a JSON body (issue 25, point 1).
        # A bearer token is never sent by a browser on its own: its body is read as before.
        raise api_error(400, "The request body must be sent as application/json.")
    else:
        try:
            data = await request.json()
        except (ValueError, RecursionError, LookupError):  # bad JSON, too deep, unknown charset
            raise api_error(400, "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise api_error(400, "The request body must be a JSON object.")
    if _has_nul(data):
        # PostgreSQL cannot store NUL in text or jsonb; refuse it here rather than fail later.
        raise api_error(400, "Text must not contain NUL characters.")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise validation_error(err) from None


MAX_ID = 2**63 - 1


def path_id(request: web.Request, name: str, *, not_found: str | None = None) -> int:
    """An id from the URL; anything that cannot be one of our ids is a 404 (or `not_found`)."""
    try:
        value = int(request.match_info[name])
    except ValueError:
        value = 0
    if not 0 < value <= MAX_ID:
        raise api_error(404, not_found or "The requested resource does not exist.")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The id `observe_middleware` (the outer one) gave the request.
    request_id = request.get(REQUEST_ID) or new_request_id()
    try:
        if request.query_string and any("\x00" in value for value in request.query.values()):
            # PostgreSQL cannot take NUL in text; no query parameter of ours needs one.
            raise api_error(400, "Query parameters must not contain NUL characters.")
        csrf.check(request)
        response = await handler(request)
    except domain.DomainError as err:
        raise from_domain(err) from None
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json" or _is_page(request):
            raise
        raise api_error(exc.status, _DEFAULT_DETAIL.get(exc.status, exc.reason)) from None
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        raise api_error(500, "Internal server error.", requestId=request_id) from None
    response.headers.setdefault("X-Request-ID", request_id)
    return response


def _is_page(request: web.Request) -> bool:
    """Pages for people keep aiohttp's own redirects and error pages."""
    return not (request.path.startswith("/api/") or request.path in ("/healthz", "/metrics"))
