"""Pages for people: the email's rejoin link, signing in and up, and the security page (setting
up an authenticator app). `/`, New organization and the overview are `api.pages.home`'s.

They reuse the API's own functions (`api.handlers.invites`, `accounts`, `authenticators`), so a
link, a password, a code or an enrollment is judged the same way here as there. Those raise
JSON `HTTPException`s; `_html_errors` turns them into pages. Forms are posted back to the same
origin only (`_same_origin`): the session cookie is SameSite=Lax, and the `Origin` header says
where a form came from.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import jinja2
from aiohttp import web
from aiohttp_session import get_session
from markupsafe import Markup
from pydantic import ValidationError

from api.auth import Auth, authenticate, mark_reauthenticated, sign_in, sign_out
from api.errors import api_error, from_domain
from api.handlers import accounts, invites
from api.handlers import authenticators as factors
from api.keys import PG, REDIS, SETTINGS
from db import authenticators, organizations, schedule
from require2fa import links, reauth, totp
from require2fa.errors import DomainError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Shipped as package data (pyproject.toml), so the path holds installed or editable.
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "templates" / "pages"
SECURITY = links.SECURITY_PATH
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
        async with request.app[PG].acquire() as conn:
            rows = await schedule.deadlines_for(conn, user["id"])
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


def _detail(exc: web.HTTPException) -> str:
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


def _html_errors(handler: Handler) -> Handler:
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
                message=_detail(exc),
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


# The form fields of the inline re-authentication step (`_ask_to_confirm`, `_form`).
SUDO_FIELDS = ("sudo_password", "sudo_otp")


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
    return await render(
        request,
        "sudo.html",
        status=401,
        action=request.path_qs,
        fields=fields,
        has2fa=bool(auth and auth.user["has2fa"]),
        error=_detail(exc) if retried else None,
    )


def _same_origin(request: web.Request) -> None:
    """A form posted from another site is refused (the `Origin` header, when a browser sends
    one, must be one of `settings.allowed_origins`), with a page saying where to go instead."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    settings = request.app[SETTINGS]
    if origin.rstrip("/").lower() not in settings.allowed_origins:
        shown = origin[:100] if origin.isprintable() else "another site"
        raise api_error(
            403,
            f"This form was sent from {shown}, but this site is {settings.origin}. "
            f"Open {settings.base_url}/ and send the form from there.",
        )


async def _form(request: web.Request) -> dict[str, str]:
    """The posted form (from this site only). A password or code of the inline
    re-authentication step (`sudo.html`) is checked first and recorded in the session, so the
    sensitive change the form asks for goes through; a wrong one asks again."""
    _same_origin(request)
    data = await request.post()
    form = {key: value for key, value in data.items() if isinstance(value, str)}
    password, otp = (form.pop(name, "") for name in SUDO_FIELDS)
    if password or otp:
        auth = await authenticate(request)
        if auth is not None and not auth.half_signed_in and auth.token_id is None:
            await accounts.confirm_identity(
                request,
                auth.user,
                password=password[:256] or None,
                otp=None if password else otp[:64],
            )
            await mark_reauthenticated(request)
    return form


def _local(path: str | None) -> str | None:
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
    remembered = (await get_session(request)).get(invites.SESSION_KEY)
    if not isinstance(remembered, dict):
        return None
    member_id, token = remembered.get("memberId"), remembered.get("token")
    if not isinstance(member_id, int) or not isinstance(token, str):
        return None
    return links.accept_path(member_id, token)


async def _after_sign_in(request: web.Request, next_path: str | None) -> str:
    return _local(next_path) or await _remembered_link(request) or HOME


async def _signed_in(request: web.Request) -> Auth:
    """The fully signed-in person, or a redirect to the sign-in page that comes back here."""
    auth = await authenticate(request)
    if auth is None or auth.half_signed_in or auth.token_id is not None:
        raise web.HTTPSeeOther(f"{LOGIN}?next={quote(request.path_qs, safe='/')}")
    return auth


# --- The email's link ---------------------------------------------------------------------


@_html_errors
async def accept_page(request: web.Request) -> web.StreamResponse:
    """What rejoining still needs, with links; remembers the link in the session (through
    `invites.look`). A POST (the "Rejoin" button) joins and goes to the organization."""
    if request.method == "POST":
        await _form(request)
        joined = await invites.accept(request)
        raise web.HTTPSeeOther(joined["redirect"])
    invite = await invites.look(request)
    return await render(request, "accept.html", invite=invite, here=request.path)


# --- Signing in and up --------------------------------------------------------------------


@_html_errors
async def login_page(request: web.Request) -> web.StreamResponse:
    """Password, then (for a user with 2FA, half signed in) a code from the second factor."""
    auth = await authenticate(request)
    half = auth is not None and auth.half_signed_in
    next_path = _local(request.query.get("next")) or ""
    if request.method == "GET":
        if auth is not None and not half:
            raise web.HTTPSeeOther(await _after_sign_in(request, next_path))
        return await render(
            request,
            "login.html",
            step="code" if half else "password",
            next=next_path,
            error=None,
            email="",
        )
    form = await _form(request)
    next_path = _local(form.get("next")) or ""
    if "otp" in form:
        if auth is None or not half:
            raise web.HTTPSeeOther(LOGIN)
        pool, redis, settings = request.app[PG], request.app[REDIS], request.app[SETTINGS]
        await factors.count_attempt(redis, settings, auth.user_id)
        factor = await factors.verify_second_factor(
            pool, redis, settings, auth.user_id, form["otp"][:64]
        )
        if factor is None:
            return await render(
                request,
                "login.html",
                status=400,
                step="code",
                next=next_path,
                error=factors.INVALID_CODE,
                email="",
            )
        await factors.attempt_succeeded(redis, settings, auth.user_id)
        await sign_in(request, auth.user_id, half=False)
        raise web.HTTPSeeOther(await _after_sign_in(request, next_path))
    email = form.get("email", "")[:320]
    try:
        body = accounts.LoginIn(email=email, password=form.get("password", ""))
    except ValidationError:
        return await render(
            request,
            "login.html",
            status=400,
            step="password",
            next=next_path,
            error="Enter your email and password.",
            email=email,
        )
    try:
        user = await accounts.check_password(request, body)
    except web.HTTPException as exc:
        if exc.status != 401:
            raise
        return await render(
            request,
            "login.html",
            status=401,
            step="password",
            next=next_path,
            error=_detail(exc),
            email=email,
        )
    await sign_in(request, user["id"], half=bool(user["has2fa"]))
    if user["has2fa"]:
        return await render(
            request, "login.html", step="code", next=next_path, error=None, email=""
        )
    raise web.HTTPSeeOther(await _after_sign_in(request, next_path))


@_html_errors
async def register_page(request: web.Request) -> web.StreamResponse:
    """Creates an account (the API's rules) and signs it in."""
    next_path = _local(request.query.get("next")) or ""
    if request.method == "GET":
        return await render(request, "register.html", next=next_path, error=None, email="", name="")
    form = await _form(request)
    next_path = _local(form.get("next")) or ""
    email, name = form.get("email", "")[:320], form.get("name", "")[:200]
    try:
        body = accounts.RegisterIn(email=email, name=name, password=form.get("password", ""))
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        return await render(
            request,
            "register.html",
            status=400,
            next=next_path,
            error=f"{field.capitalize()}: {first['msg']}",
            email=email,
            name=name,
        )
    try:
        await accounts.create_account(request, body)
    except web.HTTPException as exc:
        if exc.status != 409:
            raise
        return await render(
            request,
            "register.html",
            status=409,
            next=next_path,
            error=_detail(exc),
            email=email,
            name=name,
        )
    raise web.HTTPSeeOther(await _after_sign_in(request, next_path))


@_html_errors
async def logout_page(request: web.Request) -> web.StreamResponse:
    """Ends the session."""
    _same_origin(request)
    await sign_out(request)
    raise web.HTTPSeeOther(LOGIN)


# --- Security -----------------------------------------------------------------------------


async def _security(
    request: web.Request,
    auth: Auth,
    *,
    status: int = 200,
    secret: str | None = None,
    error: str | None = None,
    recovery_codes: list[str] | None = None,
    joined: dict[str, Any] | None = None,
) -> web.Response:
    async with request.app[PG].acquire() as conn:
        rows = await authenticators.for_user(conn, auth.user_id)
    has_totp = any(row["type"] == "totp" for row in rows)
    setup = None
    if not has_totp:
        secret = secret or totp.new_secret()
        url = totp.otpauth_url(secret, auth.user["email"])
        # Our own SVG, drawn by segno from the otpauth URL.
        setup = {"secret": secret, "qrcode": Markup(totp.qrcode_svg(url))}  # noqa: S704
    joined_org = None
    if joined is not None:
        async with request.app[PG].acquire() as conn:
            org = await organizations.by_slug(conn, joined["orgSlug"])
        joined_org = {"name": org["name"] if org else joined["orgSlug"], "url": joined["redirect"]}
    return await render(
        request,
        "security.html",
        status=status,
        factors=rows,
        setup=setup,
        error=error,
        recovery_codes=recovery_codes,
        joined=joined_org,
    )


@_html_errors
async def security_page(request: web.Request) -> web.StreamResponse:
    """The person's factors, and the authenticator app's setup (QR code and secret)."""
    auth = await _signed_in(request)
    return await _security(request, auth)


@_html_errors
async def enroll_totp_page(request: web.Request) -> web.StreamResponse:
    """Confirms the authenticator app through the API's enrollment (the factor, the first set
    of recovery codes, the security notice, and the join of a remembered invite link)."""
    form = await _form(request)
    auth = await _signed_in(request)
    secret = form.get("secret", "")[:64]
    try:
        enrolled = await factors.confirm_totp(
            request, auth, secret, form.get("otp", "")[:16], "Authenticator app"
        )
    except web.HTTPException as exc:
        if exc.status not in (400, 409):
            raise
        return await _security(request, auth, status=exc.status, secret=secret, error=_detail(exc))
    joined = await factors.after_enrollment(request, auth)
    return await _security(
        request, auth, status=201, recovery_codes=enrolled.recovery_codes, joined=joined
    )
