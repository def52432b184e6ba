"""Signing in (password, then the second factor), signing up and out
(`require2fa.accounts`, `factors`, through `api.factor_actions` as the API does)."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from api import factor_actions
from api.auth import Auth, authenticate, sign_in, sign_out
from api.bodies import LoginIn, RegisterIn
from api.connection import request_pool
from api.keys import REDIS, SETTINGS
from api.pages.base import (
    LOGIN,
    after_sign_in,
    html_errors,
    json_object,
    local_path,
    read_form,
    render,
    same_origin,
    with_wait,
)
from require2fa import accounts, caps, factors, security_keys, webauthn
from require2fa.errors import Conflict, NotSignedIn, TooMany, Unavailable


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
    interfaces = (
        await factors.interfaces(await request_pool(request), auth.user_id)
        if auth is not None
        else []
    )
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


@html_errors
async def login_page(request: web.Request) -> web.StreamResponse:
    """Password, then (for a user with 2FA, half signed in) the second factor: a code, a code
    texted on request, or a security key (whose answer `webauthn.js` posts here)."""
    auth = await authenticate(request)
    half = auth is not None and auth.half_signed_in
    next_path = local_path(request.query.get("next")) or ""
    if request.method == "GET":
        if auth is not None and not half:
            raise web.HTTPSeeOther(await after_sign_in(request, next_path))
        if half:
            return await _code_step(request, auth, next_path)
        return await _password_step(request, next_path, error=None, email="")
    posted = await read_form(request)
    next_path = local_path(posted.get("next")) or ""
    if "otp" in posted or "webauthn" in posted or "send_sms" in posted:
        if auth is None or not half:
            raise web.HTTPSeeOther(LOGIN)
        return await _second_step(request, auth, posted, next_path)
    email = posted.get("email", "")[:320]
    try:
        body = LoginIn(email=email, password=posted.get("password", ""))
    except ValidationError:
        return await _password_step(
            request, next_path, status=400, error="Enter your email and password.", email=email
        )
    try:
        user = await factor_actions.check_password(request, body.email, body.password)
    except NotSignedIn as refused:
        return await _password_step(
            request, next_path, status=401, error=refused.detail, email=email
        )
    await sign_in(request, user["id"], half=bool(user["has2fa"]))
    if user["has2fa"]:
        return await _code_step(request, await authenticate(request), next_path)
    raise web.HTTPSeeOther(await after_sign_in(request, next_path))


async def _second_step(
    request: web.Request, auth: Auth, posted: dict[str, str], next_path: str
) -> web.StreamResponse:
    if "send_sms" in posted:
        return await _send_code(request, auth, next_path)
    if "webauthn" in posted:
        credential = json_object(posted["webauthn"])
        found = (
            await factor_actions.second_factor(
                request, auth, credential=credential, purpose=webauthn.SIGN_IN
            )
            if credential is not None
            # Counted like any wrong answer.
            else await factor_actions.second_factor(request, auth)
        )
        error = security_keys.KEY_NOT_ACCEPTED
    else:
        otp = posted["otp"][:64]
        found = await factor_actions.second_factor(request, auth, otp=otp)
        pool, settings = await request_pool(request), request.app[SETTINGS]
        error = "" if found else await factors.wrong_code(pool, settings, auth.user_id, otp)
    if found is None:
        return await _code_step(request, auth, next_path, status=400, error=error)
    await sign_in(request, auth.user_id, half=False)
    raise web.HTTPSeeOther(await after_sign_in(request, next_path))


async def _send_code(request: web.Request, auth: Auth, next_path: str) -> web.Response:
    """ "Text me a code": a sign-in code to the backup phone; a refusal is said on the step."""
    try:
        factor = await factors.send_login_code(
            await request_pool(request), request.app[REDIS], request.app[SETTINGS], auth.user_id
        )
    except (TooMany, Unavailable) as refused:
        status = 429 if isinstance(refused, TooMany) else 503
        step = await _code_step(request, auth, next_path, status=status, error=refused.detail)
        return with_wait(step, refused)
    if factor is None:
        return await _code_step(
            request, auth, next_path, status=400, error="No backup phone is set up."
        )
    phone = factor["phone_hint"]
    return await _code_step(request, auth, next_path, message=f"We texted a code to {phone}.")


@html_errors
async def register_page(request: web.Request) -> web.StreamResponse:
    """Creates an account (the API's rules) and signs it in."""
    next_path = local_path(request.query.get("next")) or ""
    if request.method == "GET":
        return await render(request, "register.html", next=next_path, error=None, email="", name="")
    posted = await read_form(request)
    next_path = local_path(posted.get("next")) or ""
    email, name = posted.get("email", "")[:320], posted.get("name", "")[:200]
    error, status, limited = None, 400, None
    try:
        body = RegisterIn(email=email, name=name, password=posted.get("password", ""))
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        error = f"{field.capitalize()}: {first['msg']}"
    else:
        try:
            await caps.count_sign_up(request.app[REDIS], request.app[SETTINGS], request.remote)
            user = await accounts.create(
                await request_pool(request),
                email=str(body.email),
                name=body.name,
                password=body.password,
            )
        except Conflict as refused:
            error, status = refused.detail, 409
        except TooMany as refused:
            error, status, limited = refused.detail, 429, refused
        else:
            await sign_in(request, user["id"], half=False)
    if error is not None:
        page = await render(
            request,
            "register.html",
            status=status,
            next=next_path,
            error=error,
            email=email,
            name=name,
        )
        return with_wait(page, limited) if limited is not None else page
    raise web.HTTPSeeOther(await after_sign_in(request, next_path))


@html_errors
async def logout_page(request: web.Request) -> web.StreamResponse:
    """Ends the session."""
    same_origin(request)
    await sign_out(request)
    raise web.HTTPSeeOther(LOGIN)
