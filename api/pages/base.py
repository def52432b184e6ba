"""What every page shares: rendering, domain refusals and the API's JSON errors as error pages
(`html_errors`), the posted form with its inline re-authentication step (`form`), local `next`
paths, and the sign-in redirect.

The pages call the domain functions the API calls (through `api.factor_actions`,
`api.invite_session`, `api.org_actions` where the request is involved), so a link, a password, a
code or an enrollment is judged the same way here as there. Forms are posted back to the same
origin only (`same_origin`): the session cookie is SameSite=Lax, and the `Origin` header says
where a form came from.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import jinja2
from aiohttp import web
from aiohttp_session import get_session

from api import csrf, factor_actions, invite_session
from api.access import OrgAccess, org_access
from api.auth import Auth, authenticate, mark_reauthenticated
from api.connection import request_pool
from api.errors import api_error, from_domain, status_of
from api.keys import SETTINGS
from require2fa import factors, links, reauth, rollout
from require2fa.errors import DomainError, TooMany

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Shipped as package data (pyproject.toml), so the path holds installed or editable.
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "templates" / "pages"
LOGIN = "/auth/login/"
HOME = links.HOME_PATH


@functools.cache
def environment() -> jinja2.Environment:
    """The one environment: templates are read and compiled once per process."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["links"] = links  # every page builds its links with `require2fa.links`
    return env


async def render(
    request: web.Request, template: str, status: int = 200, **context: Any
) -> web.Response:
    auth = await authenticate(request)
    user = auth.user if auth is not None and not auth.half_signed_in else None
    deadlines: list[dict[str, str]] = []
    if user is not None:
        # The banner of every page: organizations that will require 2FA on a date this person
        # does not meet yet.
        rows = await rollout.deadlines(await request_pool(request), user["id"])
        deadlines = [
            {"name": row["name"], "slug": row["slug"], "date": _day(row["enforce_at"])}
            for row in rows
        ]
    html = environment().get_template(template).render(user=user, deadlines=deadlines, **context)
    return web.Response(text=html, content_type="text/html", status=status)


def _day(moment: datetime) -> str:
    """`March 1, 2027` (in UTC), as the emails say it."""
    moment = moment.astimezone(UTC)
    return f"{moment:%B} {moment.day}, {moment.year}"


# --- Plumbing -----------------------------------------------------------------------------


def detail(exc: web.HTTPException) -> str:
    """The sentence of one of the API's JSON errors (its first field error when it has some)."""
    try:
        body = json.loads(exc.text or "{}")
    except ValueError:
        return exc.reason
    errors = body.get("errors") or {}
    for messages in errors.values():
        if messages and body.get("detail") == "Invalid request.":
            return str(messages[0])
    return str(body.get("detail") or exc.reason)


def html_errors(handler: Handler) -> Handler:
    """Answers domain refusals and the API's JSON errors with an error page."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            try:
                return await handler(request)
            except DomainError as err:
                raise from_domain(err) from None
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type != "application/json":
                raise
            if request.method == "POST" and _code(exc) == reauth.REQUIRED_CODE:
                return await _ask_to_confirm(request, exc)
            response = await render(
                request,
                "error.html",
                status=exc.status,
                title=exc.reason,
                message=detail(exc),
                link_hint=request.path.startswith("/accept/"),
            )
            if "Retry-After" in exc.headers:
                response.headers["Retry-After"] = exc.headers["Retry-After"]
            return response

    return wrapped


def _code(exc: web.HTTPException) -> str | None:
    try:
        return json.loads(exc.text or "{}").get("code")
    except (ValueError, AttributeError):
        return None


# The form fields of the inline re-authentication step (`_ask_to_confirm`, `form`).
SUDO_FIELDS = ("sudo_password", "sudo_otp", "sudo_webauthn")
_MAX_ASSERTION = 16 * 1024  # a security key's answer is a few hundred bytes


async def _ask_to_confirm(request: web.Request, exc: web.HTTPException) -> web.Response:
    """A form posted for a sensitive change without a recent re-authentication: the same form
    again (its fields hidden), with the password or a code to add; posting it continues."""
    auth = await authenticate(request)
    data = await request.post()
    fields = [
        (key, value)
        for key, value in data.items()
        if isinstance(value, str) and key not in SUDO_FIELDS
    ]
    retried = any(data.get(name) for name in SUDO_FIELDS)
    has_key = False
    if auth is not None:
        has_key = "webauthn" in await factors.interfaces(await request_pool(request), auth.user_id)
    return await render(
        request,
        "sudo.html",
        status=401,
        action=request.path_qs,
        fields=fields,
        has2fa=bool(auth and auth.user["has2fa"]),
        has_key=has_key,
        error=detail(exc) if retried else None,
    )


def _assertion(text: str) -> dict[str, Any]:
    """The security key's answer that webauthn.js wrote into the form (JSON); an empty one
    when it is not an object, which then fails verification like any wrong answer."""
    try:
        value = json.loads(text[:_MAX_ASSERTION])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def json_object(text: str) -> dict[str, Any] | None:
    """A JSON object posted in a form field (a security key's answer), or None."""
    if len(text) > 64 * 1024:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def same_origin(request: web.Request) -> None:
    """A form posted from another site is refused (`api.csrf.from_another_site`: the `Origin`
    header, when a browser sends one, must be one of `settings.allowed_origins`, and
    `Sec-Fetch-Site` must not say `cross-site`), with a page saying where to go instead."""
    origin = request.headers.get("Origin")
    settings = request.app[SETTINGS]
    if csrf.from_another_site(request) is not None:
        shown = origin[:100] if origin and origin.isprintable() else "another site"
        raise api_error(
            403,
            f"This form was sent from {shown}, but this site is {settings.origin}. "
            f"Open {settings.base_url}/ and send the form from there.",
        )


async def read_form(request: web.Request) -> dict[str, str]:
    """The posted form (from this site only). A password or code of the inline
    re-authentication step (`sudo.html`) is checked first and recorded in the session, so the
    sensitive change the form asks for goes through; a wrong one asks again."""
    same_origin(request)
    data = await request.post()
    form = {key: value for key, value in data.items() if isinstance(value, str)}
    password, otp, key_answer = (form.pop(name, "") for name in SUDO_FIELDS)
    if password or otp or key_answer:
        auth = await authenticate(request)
        if auth is not None and not auth.half_signed_in and auth.token_id is None:
            if key_answer and not (password or otp):
                await factor_actions.confirm_with_key(request, auth, _assertion(key_answer))
            else:
                await factor_actions.confirm_identity(
                    request,
                    auth.user,
                    password=password[:256] or None,
                    otp=None if password else otp[:64],
                )
            await mark_reauthenticated(request)
    return form


def local_path(path: str | None) -> str | None:
    r"""`path` when it can only be a path of this site, else None (the caller's default).

    Browsers drop tabs and newlines inside a URL and read a backslash as a slash, so
    `/\t/evil.example` or `/\\evil.example` would be `//evil.example`: another site. Only
    printable ASCII is kept (no whitespace, no control character, no look-alike), starting
    with one slash, with no backslash; and once percent-decoded (a decoding proxy in front
    must not make one) still no leading `//`, no backslash and no control character.
    """
    if not path or not all("\x21" <= char <= "\x7e" for char in path):
        return None
    decoded = unquote(path)
    for form in (path, decoded):
        if not form.startswith("/") or form.startswith("//") or "\\" in form:
            return None
    if any(char < "\x20" or char == "\x7f" for char in decoded):
        return None
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        return None
    return path


async def _remembered_link(request: web.Request) -> str | None:
    held = invite_session.remembered(await get_session(request), request.app[SETTINGS].secret_key)
    return links.accept_path(*held) if held is not None else None


async def after_sign_in(request: web.Request, next_path: str | None) -> str:
    return local_path(next_path) or await _remembered_link(request) or HOME


async def signed_in(request: web.Request) -> Auth:
    """The fully signed-in person, or a redirect to the sign-in page that comes back here."""
    auth = await authenticate(request)
    if auth is None or auth.half_signed_in or auth.token_id is not None:
        raise web.HTTPSeeOther(f"{LOGIN}?next={quote(request.path_qs, safe='/')}")
    return auth


# Refusals that a page shows in place, on the form that was sent (the rest, such as 404,
# become an error page).
SHOWN_HERE = (400, 403, 409, 429, 503)


def with_wait(response: web.Response, err: DomainError) -> web.Response:
    """`response` (a page saying `err` in place) with the `Retry-After` of a rate limit: the
    same seconds as the wait its sentence names."""
    if isinstance(err, TooMany):
        response.headers["Retry-After"] = str(err.retry_after)
    return response


def shown_here(err: DomainError) -> bool:
    """Whether the page that was posted shows `err` in place (else `html_errors` answers)."""
    return status_of(err) in SHOWN_HERE


def org_url(access: OrgAccess, section: str = "") -> str:
    return links.organization_path(access.org["slug"], section)


async def org_page(request: web.Request, *, roles: tuple[str, ...] | None = None) -> OrgAccess:
    """The signed-in person's view of the organization (a sign-in redirect when there is none;
    the API's 404, 401 `2fa-required` and 403, as pages)."""
    await signed_in(request)
    return await org_access(request, roles=roles)


# --- After a form: Post/Redirect/Get with a notice ----------------------------------------

_NOTICE = "notice"


async def redirect_with_notice(
    location: str, request: web.Request, notice: str
) -> web.HTTPSeeOther:
    """A redirect to `location` (a path of this site) that shows `notice` there once: the
    notice waits in the session until the next page of this person takes it."""
    session = await get_session(request)
    session[_NOTICE] = notice[:500]
    return web.HTTPSeeOther(location)


async def take_notice(request: web.Request) -> str | None:
    """The notice a redirect left for this page (once), if any."""
    session = await get_session(request)
    notice = session.pop(_NOTICE, None)
    return notice if isinstance(notice, str) else None


def kept_query(text: str, keys: tuple[str, ...]) -> str:
    """`?a=b` of the query string `text` (a form's `back` field) with only `keys` kept, re-encoded,
    so that a redirect returns to the same filtered page and nowhere else; "" when none."""
    pairs = parse_qsl(text[:1000].lstrip("?"))
    kept = [(key, value[:200]) for key, value in pairs if key in keys]
    return f"?{urlencode(kept)}" if kept else ""
