"""The security page, `/account/security/`: every factor of the person, adding an authenticator
app, a security key or passkey, a backup phone, new recovery codes, renaming and removing a
factor, and the signed-in sessions (`require2fa.factors`, `security_keys`, `accounts`, as the
API calls them)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web
from markupsafe import Markup

from api import factor_actions
from api.auth import Auth, require_sudo, sign_out
from api.connection import request_pool
from api.errors import path_id, status_of
from api.keys import REDIS, SETTINGS
from api.pages.base import (
    LOGIN,
    html_errors,
    json_object,
    read_form,
    render,
    shown_here,
    signed_in,
    with_wait,
)
from api.sessions import SESSION_ID
from require2fa import (
    accounts,
    compliance,
    devices,
    enrollment,
    factors,
    security_keys,
    sms,
    totp,
)
from require2fa.errors import DomainError

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
    pool = await request_pool(request)
    rows = await factors.listed(pool, auth.user_id)
    signed_in_at = await accounts.sessions_of(pool, auth.user_id)
    has_totp = any(row["type"] == "totp" for row in rows)
    has_sms = any(row["type"] == "sms" for row in rows)
    # A phone is offered as a backup only: after an app or a key (the phishable, SIM-swappable
    # factor is not what anyone should start with).
    has_primary = any(row["type"] in ("totp", "webauthn") for row in rows)
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
        has_second_factor=compliance.meets_requirement(row["type"] for row in rows),
        has_sms=has_sms,
        has_primary=has_primary,
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
        sessions=signed_in_at,
        device_name=devices.device_name,
        current_session=request.get(SESSION_ID),
    )


async def _refused(
    request: web.Request, auth: Auth, err: DomainError, **context: Any
) -> web.Response:
    """The security page saying why the form was refused (or the error page, `html_errors`,
    for a refusal not shown in place)."""
    if not shown_here(err):
        raise err
    response = await _security(request, auth, status=status_of(err), error=err.detail, **context)
    return with_wait(response, err)


@html_errors
async def security_page(request: web.Request) -> web.StreamResponse:
    """Every factor of the person (kind, name, added, last used, rename, remove), and adding
    an authenticator app, a security key or passkey, a backup phone, new recovery codes."""
    auth = await signed_in(request)
    return await _security(request, auth)


@html_errors
async def enroll_totp_page(request: web.Request) -> web.StreamResponse:
    """Confirms the authenticator app as the API's enrollment does (the factor, the first set
    of recovery codes, the security notice, and the join step of a remembered invite link)."""
    posted = await read_form(request)
    auth = await signed_in(request)
    secret = posted.get("secret", "")[:64]
    try:
        enrolled = await enrollment.confirm_totp(
            await request_pool(request),
            request.app[REDIS],
            request.app[SETTINGS],
            auth.user,
            secret_text=secret,
            otp=posted.get("otp", "")[:16],
            name="Authenticator app",
        )
    except DomainError as err:
        return await _refused(request, auth, err, secret=secret)
    return await _after_enrollment(request, auth, enrolled, "Authenticator app added.")


async def _after_enrollment(
    request: web.Request, auth: Auth, enrolled: enrollment.Enrolled, message: str
) -> web.Response:
    join_step = await factor_actions.after_enrollment(request, auth)
    return await _security(
        request,
        auth,
        status=201,
        message=message,
        recovery_codes=enrolled.recovery_codes,
        join_step=join_step,
    )


@html_errors
async def enroll_webauthn_page(request: web.Request) -> web.StreamResponse:
    """Verifies the new key's registration response that `webauthn.js` posts (against the
    challenge the API gave this session) and writes it as the API's enrollment does."""
    posted = await read_form(request)
    auth = await signed_in(request)
    credential = json_object(posted.get("credential", ""))
    name = posted.get("name", "")[:100].strip() or "Security key"
    if credential is None:
        return await _security(request, auth, status=400, error=security_keys.KEY_NOT_ACCEPTED)
    try:
        enrolled = await factor_actions.register_key(request, auth, credential, name)
    except DomainError as err:
        return await _refused(request, auth, err)
    return await _after_enrollment(request, auth, enrolled, f"{enrolled.factor['name']} added.")


@html_errors
async def enroll_sms_page(request: web.Request) -> web.StreamResponse:
    """A backup phone: `phone` texts it a code; `phone` and `otp` confirm it."""
    posted = await read_form(request)
    auth = await signed_in(request)
    phone = posted.get("phone", "")[:32]
    otp = posted.get("otp")
    pool, redis, settings = await request_pool(request), request.app[REDIS], request.app[SETTINGS]
    try:
        if otp is None:
            sent_to = await enrollment.send_enrollment_code(
                pool, redis, settings, auth.user_id, phone
            )
            return await _security(
                request,
                auth,
                message=f"We texted a code to {sms.mask_phone(sent_to)}.",
                sms_pending=sent_to,
            )
        enrolled = await enrollment.confirm_sms(
            pool, redis, settings, auth.user, phone_text=phone, otp=otp[:16]
        )
    except DomainError as err:
        return await _refused(request, auth, err, sms_pending=phone if otp is not None else None)
    return await _after_enrollment(request, auth, enrolled, "Backup phone added.")


@html_errors
async def recovery_codes_page(request: web.Request) -> web.StreamResponse:
    """New recovery codes, shown once (with a .txt download); the old ones stop working."""
    await read_form(request)
    auth = await signed_in(request)
    await require_sudo(request)
    try:
        codes = await enrollment.regenerate(
            await request_pool(request), request.app[SETTINGS], auth.user
        )
    except DomainError as err:
        return await _refused(request, auth, err)
    return await _security(request, auth, message="New recovery codes.", recovery_codes=codes)


@html_errors
async def end_session_page(request: web.Request) -> web.StreamResponse:
    """Ends one of the person's sessions (the "End" button of the Sessions section); ending
    this one signs out."""
    await read_form(request)
    auth = await signed_in(request)
    session_id = path_id(request, "id", not_found=accounts.SESSION_NOT_FOUND)
    if session_id == request.get(SESSION_ID):
        await sign_out(request)
        raise web.HTTPSeeOther(LOGIN)
    await accounts.end_session(await request_pool(request), auth.user_id, session_id)
    return await _security(request, auth, message="Session ended.")


@html_errors
async def end_other_sessions_page(request: web.Request) -> web.StreamResponse:
    """Ends every session of the person but this one."""
    await read_form(request)
    auth = await signed_in(request)
    ended = await accounts.end_other_sessions(
        await request_pool(request), auth.user_id, keep=request.get(SESSION_ID)
    )
    noun = "session" if ended == 1 else "sessions"
    return await _security(request, auth, message=f"{ended} other {noun} ended.")


def _factor_id(request: web.Request) -> int:
    return path_id(request, "id", not_found=factors.NOT_FOUND)


@html_errors
async def rename_factor_page(request: web.Request) -> web.StreamResponse:
    posted = await read_form(request)
    auth = await signed_in(request)
    try:
        row = await enrollment.rename(
            await request_pool(request),
            auth.user_id,
            _factor_id(request),
            posted.get("name", "")[:200],
        )
    except DomainError as err:
        return await _refused(request, auth, err)
    return await _security(request, auth, message=f"Renamed to {row['name']}.")


@html_errors
async def remove_factor_page(request: web.Request) -> web.StreamResponse:
    """Removes a factor, unless it is the last one while an organization requires 2FA (the
    contract's sentence is shown)."""
    await read_form(request)
    auth = await signed_in(request)
    authenticator_id = _factor_id(request)
    await require_sudo(request)
    try:
        row = await enrollment.remove(
            await request_pool(request),
            request.app[SETTINGS],
            auth.user,
            authenticator_id,
            keep_session=request.get(SESSION_ID),
        )
    except DomainError as err:
        return await _refused(request, auth, err)
    return await _security(request, auth, message=f"{row['name']} removed.")
