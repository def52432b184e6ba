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

from api import invite_session
from api.auth import Auth, authenticate, mark_reauthenticated, sign_in, sign_out
from api.connection import connection, request_pool
from api.errors import api_error, from_domain, path_id
from api.handlers import accounts, invites
from api.handlers import authenticators as factors
from api.keys import REDIS, SETTINGS
from api.sessions import SESSION_ID
from db import authenticators, schedule, sessions
from require2fa import compliance, links, reauth, sms, totp, webauthn
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
        async with connection(request) as conn:
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
        async with connection(request) as conn:
            has_key = bool(await authenticators.of_type(conn, auth.user_id, "webauthn"))
    return await render(
        request,
        "sudo.html",
        status=401,
        action=request.path_qs,
        fields=fields,
        has2fa=bool(auth and auth.user["has2fa"]),
        has_key=has_key,
        error=_detail(exc) if retried else None,
    )


def _assertion(text: str) -> dict[str, Any]:
    """The security key's answer that webauthn.js wrote into the form (JSON); an empty one
    when it is not an object, which then fails verification like any wrong answer."""
    try:
        value = json.loads(text[:_MAX_ASSERTION])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


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
    password, otp, key_answer = (form.pop(name, "") for name in SUDO_FIELDS)
    if password or otp or key_answer:
        auth = await authenticate(request)
        if auth is not None and not auth.half_signed_in and auth.token_id is None:
            if key_answer and not (password or otp):
                await accounts.confirm_with_key(request, auth, _assertion(key_answer))
            else:
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
    held = invite_session.remembered(await get_session(request), request.app[SETTINGS].secret_key)
    return links.accept_path(*held) if held is not None else None


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
    return await render(
        request,
        "accept.html",
        invite=invite,
        here=request.path,
        needs=compliance.needs(invite["require2FALevel"]),
    )


# --- Signing in and up --------------------------------------------------------------------


async def _code_step(
    request: web.Request,
    auth: Auth | None,
    next_path: str,
    *,
    status: int = 200,
    error: str | None = None,
    message: str | None = None,
) -> web.Response:
    """The second step of signing in, offering what the user has: a code (app, phone or
    recovery code), "Text me a code" for a backup phone, "Use your security key"."""
    interfaces = await accounts.interfaces(request, auth.user_id) if auth is not None else []
    return await render(
        request,
        "login.html",
        status=status,
        step="code",
        next=next_path,
        error=error,
        message=message,
        email="",
        interfaces=interfaces,
    )


async def _password_step(
    request: web.Request, next_path: str, *, status: int = 200, error: str | None, email: str
) -> web.Response:
    return await render(
        request,
        "login.html",
        status=status,
        step="password",
        next=next_path,
        error=error,
        message=None,
        email=email,
        interfaces=[],
    )


@_html_errors
async def login_page(request: web.Request) -> web.StreamResponse:
    """Password, then (for a user with 2FA, half signed in) the second factor: a code, a code
    texted on request, or a security key (whose answer `webauthn.js` posts here)."""
    auth = await authenticate(request)
    half = auth is not None and auth.half_signed_in
    next_path = _local(request.query.get("next")) or ""
    if request.method == "GET":
        if auth is not None and not half:
            raise web.HTTPSeeOther(await _after_sign_in(request, next_path))
        if half:
            return await _code_step(request, auth, next_path)
        return await _password_step(request, next_path, error=None, email="")
    form = await _form(request)
    next_path = _local(form.get("next")) or ""
    if "otp" in form or "webauthn" in form or "send_sms" in form:
        if auth is None or not half:
            raise web.HTTPSeeOther(LOGIN)
        return await _second_step(request, auth, form, next_path)
    email = form.get("email", "")[:320]
    try:
        body = accounts.LoginIn(email=email, password=form.get("password", ""))
    except ValidationError:
        return await _password_step(
            request, next_path, status=400, error="Enter your email and password.", email=email
        )
    try:
        user = await accounts.check_password(request, body)
    except web.HTTPException as exc:
        if exc.status != 401:
            raise
        return await _password_step(request, next_path, status=401, error=_detail(exc), email=email)
    await sign_in(request, user["id"], half=bool(user["has2fa"]))
    if user["has2fa"]:
        return await _code_step(request, await authenticate(request), next_path)
    raise web.HTTPSeeOther(await _after_sign_in(request, next_path))


async def _second_step(
    request: web.Request, auth: Auth, form: dict[str, str], next_path: str
) -> web.StreamResponse:
    pool, redis, settings = await request_pool(request), request.app[REDIS], request.app[SETTINGS]
    if "send_sms" in form:
        try:
            factor = await factors.send_login_code(pool, redis, settings, auth.user_id)
        except web.HTTPException as exc:
            if exc.status not in (429, 503):
                raise
            return await _code_step(request, auth, next_path, status=exc.status, error=_detail(exc))
        if factor is None:
            return await _code_step(
                request, auth, next_path, status=400, error="No backup phone is set up."
            )
        phone = sms.mask_phone(factor["phone"])
        return await _code_step(request, auth, next_path, message=f"We texted a code to {phone}.")
    await factors.count_attempt(redis, settings, auth.user_id)
    if "webauthn" in form:
        credential = _json_object(form["webauthn"])
        found = (
            await factors.verify_webauthn(request, auth, credential, webauthn.SIGN_IN)
            if credential is not None
            else None
        )
        error = factors.KEY_NOT_ACCEPTED
    else:
        found = await factors.verify_second_factor(
            pool, redis, settings, auth.user_id, form["otp"][:64]
        )
        error = factors.INVALID_CODE
    if found is None:
        return await _code_step(request, auth, next_path, status=400, error=error)
    await factors.attempt_succeeded(redis, settings, auth.user_id)
    await sign_in(request, auth.user_id, half=False)
    raise web.HTTPSeeOther(await _after_sign_in(request, next_path))


def _json_object(text: str) -> dict[str, Any] | None:
    """A JSON object posted in a form field (a security key's answer), or None."""
    if len(text) > 64 * 1024:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


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


KINDS = {
    "totp": "Authenticator app",
    "sms": "Backup phone",
    "webauthn": "Security key or passkey",
    "recovery": "Recovery codes",
}
RECOVERY_FILE = "require2fa-recovery-codes.txt"


def _recovery_download(email: str, codes: list[str]) -> str:
    """The recovery codes as a `data:` URL for the page's download link (nothing is stored in
    the clear, so the page that shows them once is the only place they can come from)."""
    text = (
        f"require2fa recovery codes for {email}\n\n"
        + "\n".join(codes)
        + ("\n\nEach code signs you in once. Keep this file somewhere safe.\n")
    )
    return "data:text/plain;charset=utf-8," + quote(text, safe="")


async def _security(
    request: web.Request,
    auth: Auth,
    *,
    status: int = 200,
    secret: str | None = None,
    error: str | None = None,
    message: str | None = None,
    recovery_codes: list[str] | None = None,
    join_step: dict[str, Any] | None = None,
    sms_pending: str | None = None,
) -> web.Response:
    async with connection(request) as conn:
        rows = await authenticators.for_user(conn, auth.user_id)
        signed_in = await sessions.for_user(conn, auth.user_id)
    has_totp = any(row["type"] == "totp" for row in rows)
    has_sms = any(row["type"] == "sms" for row in rows)
    setup = None
    if not has_totp:
        secret = secret or totp.new_secret()
        url = totp.otpauth_url(secret, auth.user["email"])
        # Our own SVG, drawn by segno from the otpauth URL.
        setup = {"secret": secret, "qrcode": Markup(totp.qrcode_svg(url))}  # noqa: S704
    return await render(
        request,
        "security.html",
        status=status,
        factors=rows,
        kinds=KINDS,
        has_second_factor=any(row["type"] in authenticators.SECOND_FACTORS for row in rows),
        has_sms=has_sms,
        sms_pending=sms_pending,
        setup=setup,
        error=error,
        message=message,
        recovery_codes=recovery_codes,
        recovery_download=(
            _recovery_download(auth.user["email"], recovery_codes) if recovery_codes else None
        ),
        recovery_file=RECOVERY_FILE,
        join_step=join_step,
        sessions=signed_in,
        current_session=request.get(SESSION_ID),
    )


# Refusals from the API's functions that the security page shows in place (the rest, such as
# 404, become an error page).
SHOWN_HERE = (400, 403, 409, 429, 503)


@_html_errors
async def security_page(request: web.Request) -> web.StreamResponse:
    """Every factor of the person (kind, name, added, last used, rename, remove), and adding
    an authenticator app, a security key or passkey, a backup phone, new recovery codes."""
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
        if exc.status not in SHOWN_HERE:
            raise
        return await _security(request, auth, status=exc.status, secret=secret, error=_detail(exc))
    return await _after_enrollment(request, auth, enrolled, "Authenticator app added.")


async def _after_enrollment(
    request: web.Request, auth: Auth, enrolled: factors.Enrolled, message: str
) -> web.Response:
    join_step = await factors.after_enrollment(request, auth)
    return await _security(
        request,
        auth,
        status=201,
        message=message,
        recovery_codes=enrolled.recovery_codes,
        join_step=join_step,
    )


@_html_errors
async def enroll_webauthn_page(request: web.Request) -> web.StreamResponse:
    """Verifies the new key's registration response that `webauthn.js` posts (against the
    challenge the API gave this session) and writes it as the API's enrollment does."""
    form = await _form(request)
    auth = await _signed_in(request)
    credential = _json_object(form.get("credential", ""))
    name = form.get("name", "")[:100].strip() or "Security key"
    if credential is None:
        return await _security(request, auth, status=400, error=factors.KEY_NOT_ACCEPTED)
    try:
        enrolled = await factors.confirm_webauthn(request, auth, credential, name)
    except web.HTTPException as exc:
        if exc.status not in SHOWN_HERE:
            raise
        return await _security(request, auth, status=exc.status, error=_detail(exc))
    return await _after_enrollment(request, auth, enrolled, f"{enrolled.factor['name']} added.")


@_html_errors
async def enroll_sms_page(request: web.Request) -> web.StreamResponse:
    """A backup phone: `phone` texts it a code; `phone` and `otp` confirm it."""
    form = await _form(request)
    auth = await _signed_in(request)
    phone = form.get("phone", "")[:32]
    otp = form.get("otp")
    try:
        if otp is None:
            sent_to = await factors.send_enrollment_code(request, auth, phone)
            return await _security(
                request,
                auth,
                message=f"We texted a code to {sms.mask_phone(sent_to)}.",
                sms_pending=sent_to,
            )
        enrolled = await factors.confirm_sms(request, auth, phone, otp[:16])
    except web.HTTPException as exc:
        if exc.status not in SHOWN_HERE:
            raise
        pending = phone if otp is not None else None
        return await _security(
            request, auth, status=exc.status, error=_detail(exc), sms_pending=pending
        )
    return await _after_enrollment(request, auth, enrolled, "Backup phone added.")


@_html_errors
async def recovery_codes_page(request: web.Request) -> web.StreamResponse:
    """New recovery codes, shown once (with a .txt download); the old ones stop working."""
    await _form(request)
    auth = await _signed_in(request)
    try:
        codes = await factors.regenerate(request, auth)
    except web.HTTPException as exc:
        if exc.status not in SHOWN_HERE:
            raise
        return await _security(request, auth, status=exc.status, error=_detail(exc))
    return await _security(request, auth, message="New recovery codes.", recovery_codes=codes)


@_html_errors
async def end_session_page(request: web.Request) -> web.StreamResponse:
    """Ends one of the person's sessions (the "End" button of the Sessions section); ending
    this one signs out."""
    await _form(request)
    auth = await _signed_in(request)
    session_id = path_id(request, "id", not_found="The requested session does not exist.")
    if session_id == request.get(SESSION_ID):
        await sign_out(request)
        raise web.HTTPSeeOther(LOGIN)
    async with connection(request) as conn:
        if not await sessions.end(conn, auth.user_id, session_id):
            raise api_error(404, "The requested session does not exist.")
    return await _security(request, auth, message="Session ended.")


@_html_errors
async def end_other_sessions_page(request: web.Request) -> web.StreamResponse:
    """Ends every session of the person but this one."""
    await _form(request)
    auth = await _signed_in(request)
    async with connection(request) as conn:
        ended = await sessions.end_others(conn, auth.user_id, keep=request.get(SESSION_ID))
    noun = "session" if ended == 1 else "sessions"
    return await _security(request, auth, message=f"{ended} other {noun} ended.")


def _factor_id(request: web.Request) -> int:
    return path_id(request, "id", not_found="The requested authenticator does not exist.")


@_html_errors
async def rename_factor_page(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    auth = await _signed_in(request)
    try:
        row = await factors.rename(request, auth, _factor_id(request), form.get("name", "")[:200])
    except web.HTTPException as exc:
        if exc.status not in SHOWN_HERE:
            raise
        return await _security(request, auth, status=exc.status, error=_detail(exc))
    return await _security(request, auth, message=f"Renamed to {row['name']}.")


@_html_errors
async def remove_factor_page(request: web.Request) -> web.StreamResponse:
    """Removes a factor, unless it is the last one while an organization requires 2FA (the
    contract's sentence is shown)."""
    await _form(request)
    auth = await _signed_in(request)
    try:
        row = await factors.remove(request, auth, _factor_id(request))
    except web.HTTPException as exc:
        if exc.status not in SHOWN_HERE:
            raise
        return await _security(request, auth, status=exc.status, error=_detail(exc))
    return await _security(request, auth, message=f"{row['name']} removed.")
