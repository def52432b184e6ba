"""Accounts: register, sign in (password, then the second factor) and out, API tokens, the
current user (`require2fa.accounts`, `factors`, `tokens`, through `api.factor_actions` where the
session is involved)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api import factor_actions
from api.auth import mark_reauthenticated, require_sudo, require_user, sign_in, sign_out
from api.bodies import LoginIn, RegisterIn
from api.connection import request_pool
from api.errors import api_error, parse_body, path_id
from api.jsonio import json_response
from api.keys import REDIS, SETTINGS
from api.serializers import serialize_session, serialize_token, serialize_user
from api.sessions import SESSION_ID
from api.shapes import NewApiToken, SmsSent, Sudo, WebauthnOptions
from require2fa import accounts, caps, factors, reauth, security_keys, tokens, webauthn
from require2fa.errors import DomainError


class TokenIn(BaseModel):
    name: str = Field(default="", max_length=200)


class EmptyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SecondFactorIn(BaseModel):
    """A code (`otp`: TOTP, SMS or recovery code) or a security key's answer (`webauthn`: the
    authentication response JSON of `navigator.credentials.get()`); exactly one."""

    otp: str | None = Field(default=None, min_length=1, max_length=64)
    webauthn: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> SecondFactorIn:
        if (self.otp is None) == (self.webauthn is None):
            raise ValueError("Send either otp or webauthn.")
        return self


class SudoIn(BaseModel):
    """One of: the account's password, a code from a second factor (TOTP, SMS, recovery), or a
    security key's answer (`webauthn`) to the challenge of `auth/sudo/webauthn/`."""

    password: str | None = Field(default=None, min_length=1, max_length=256)
    otp: str | None = Field(default=None, min_length=1, max_length=64)
    webauthn: dict[str, Any] | None = None


class PasswordIn(BaseModel):
    current: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=8, max_length=256)


async def register(request: web.Request) -> web.Response:
    """Creates a user and signs them in."""
    body = await parse_body(request, RegisterIn)
    user = await create_account(request, body)
    return json_response(serialize_user(user), status=201)


async def create_account(request: web.Request, body: RegisterIn) -> Any:
    """`accounts.create` (capped per client address) and signs the new user in; `Conflict`
    when the email is taken."""
    await caps.count_sign_up(request.app[REDIS], request.app[SETTINGS], request.remote)
    user = await accounts.create(
        await request_pool(request), email=str(body.email), name=body.name, password=body.password
    )
    await sign_in(request, user["id"], half=False)
    return user


async def login(request: web.Request) -> web.Response:
    """Checks the password; a user with 2FA is only half signed in until `auth/2fa/` (and when
    a backup phone is their only factor, it is sent a code). Attempts count against the client
    address and account together (429 once over)."""
    body = await parse_body(request, LoginIn)
    user = await factor_actions.check_password(request, body.email, body.password)
    if user["has2fa"]:
        await sign_in(request, user["id"], half=True)
        kinds = await factors.interfaces(await request_pool(request), user["id"])
        extra: dict[str, Any] = {"2faRequired": True, "interfaces": kinds}
        if "sms" in kinds and "totp" not in kinds and "webauthn" not in kinds:
            extra["smsSent"] = await _try_send_login_code(request, user["id"])
        raise api_error(401, "Enter a code from your second factor.", **extra)
    await sign_in(request, user["id"], half=False)
    return json_response(serialize_user(user))


async def _try_send_login_code(request: web.Request, user_id: int) -> bool:
    """Sign-in goes on even when the text cannot be sent now; `auth/2fa/sms/` resends."""
    try:
        sent = await factors.send_login_code(
            await request_pool(request), request.app[REDIS], request.app[SETTINGS], user_id
        )
    except DomainError:
        return False
    return sent is not None


async def second_factor(request: web.Request) -> web.Response:
    """Checks a TOTP, SMS or recovery code, or a security key's answer to the challenge of
    `auth/2fa/webauthn/`, for a half-signed-in session (rate limited); on success the session
    is fully signed in, under a new cookie."""
    auth = await require_user(request, allow_half=True)
    if not auth.half_signed_in:
        raise api_error(400, "You are already signed in.")
    body = await parse_body(request, SecondFactorIn)
    factor = await factor_actions.second_factor(
        request, auth, otp=body.otp, credential=body.webauthn, purpose=webauthn.SIGN_IN
    )
    if factor is None:
        wrong = (
            security_keys.KEY_NOT_ACCEPTED
            if body.webauthn is not None
            else await factors.wrong_code(
                await request_pool(request), request.app[SETTINGS], auth.user_id, body.otp or ""
            )
        )
        raise api_error(401, wrong, **{"2faRequired": True})
    await sign_in(request, auth.user_id, half=False)
    user = await accounts.user(await request_pool(request), auth.user_id)
    return json_response(serialize_user(user))


async def send_sms_code(request: web.Request) -> web.Response:
    """Texts a sign-in code to the backup phone of a half-signed-in session (rate limited)."""
    auth = await require_user(request, allow_half=True)
    if not auth.half_signed_in:
        raise api_error(400, "You are already signed in.")
    factor = await factors.send_login_code(
        await request_pool(request), request.app[REDIS], request.app[SETTINGS], auth.user_id
    )
    if factor is None:
        raise api_error(400, "No backup phone is set up for this account.")
    body: SmsSent = {"sent": True, "phone": factor["phone_hint"]}
    return json_response(body)


async def webauthn_challenge(request: web.Request) -> web.Response:
    """Starts the security-key step of a half-signed-in session: `{"publicKey": request
    options}` with a fresh challenge bound to this session (five minutes, single use)."""
    auth = await require_user(request, allow_half=True)
    if not auth.half_signed_in:
        raise api_error(400, "You are already signed in.")
    await parse_body(request, EmptyIn)
    body: WebauthnOptions = {
        "publicKey": await factor_actions.key_options(request, auth, webauthn.SIGN_IN)
    }
    return json_response(body)


async def logout(request: web.Request) -> web.Response:
    await sign_out(request)
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    auth = await require_user(request)
    return json_response(serialize_user(auth.user))


async def create_api_token(request: web.Request) -> web.Response:
    """Creates an API token for the caller (sudo); the token is in this answer and nowhere
    else."""
    auth = await require_sudo(request)
    body = await parse_body(request, TokenIn)
    token_id, token = await tokens.create(await request_pool(request), auth.user_id, name=body.name)
    created: NewApiToken = {"id": str(token_id), "token": token, "name": body.name}
    return json_response(created, status=201)


async def list_api_tokens(request: web.Request) -> web.Response:
    """The caller's API tokens: names and dates (a token itself is only ever shown once)."""
    auth = await require_user(request)
    rows = await tokens.listed(await request_pool(request), auth.user_id)
    return json_response([serialize_token(row) for row in rows])


async def revoke_api_token(request: web.Request) -> web.Response:
    """Deletes one of the caller's API tokens; it stops working at once."""
    auth = await require_user(request)
    token_id = path_id(request, "id")
    await tokens.revoke(await request_pool(request), auth.user_id, token_id)
    return web.Response(status=204)


# --- Re-authentication ("sudo mode") --------------------------------------------------------


async def sudo(request: web.Request) -> web.Response:
    """Checks the password or a second-factor code of a signed-in session and records it, so
    that sensitive changes are allowed for the next 10 minutes. Wrong ones count against the
    sign-in and second-factor rate limits."""
    auth = await require_user(request)
    if auth.token_id is not None:
        raise api_error(400, "API tokens do not need to confirm a password.")
    body = await parse_body(request, SudoIn)
    if body.webauthn is not None and body.password is None and body.otp is None:
        await factor_actions.confirm_with_key(request, auth, body.webauthn)
    else:
        if body.webauthn is not None:
            raise api_error(400, "Send one of password, otp or webauthn.")
        await factor_actions.confirm_identity(
            request, auth.user, password=body.password, otp=body.otp
        )
    checked_at = await mark_reauthenticated(request)
    until: Sudo = {"sudoUntil": datetime.fromtimestamp(checked_at, UTC) + reauth.WINDOW}
    return json_response(until)


async def sudo_webauthn_challenge(request: web.Request) -> web.Response:
    """Starts a re-authentication with a security key: `{"publicKey": request options}`, a
    fresh challenge bound to this session (five minutes, single use); 400 without a key."""
    auth = await require_user(request)
    if auth.token_id is not None:
        raise api_error(400, "API tokens do not need to confirm a password.")
    await parse_body(request, EmptyIn)
    body: WebauthnOptions = {
        "publicKey": await factor_actions.key_options(request, auth, webauthn.SUDO)
    }
    return json_response(body)


# --- Password and sessions ----------------------------------------------------------------


async def change_password(request: web.Request) -> web.Response:
    """Sets a new password after checking the current one; ends the user's other sessions and
    revokes their other API tokens."""
    auth = await require_user(request)
    body = await parse_body(request, PasswordIn)
    await factor_actions.confirm_identity(request, auth.user, password=body.current)
    await accounts.change_password(
        await request_pool(request),
        auth.user_id,
        password=body.password,
        keep_session=request.get(SESSION_ID),
        keep_token=auth.token_id,
    )
    if auth.token_id is None:
        await mark_reauthenticated(request)
    return web.Response(status=204)


async def list_sessions(request: web.Request) -> web.Response:
    """The caller's signed-in sessions (browsers), the current one marked."""
    auth = await require_user(request)
    rows = await accounts.sessions_of(await request_pool(request), auth.user_id)
    current = request.get(SESSION_ID)
    return json_response([serialize_session(row, current) for row in rows])


async def end_other_sessions(request: web.Request) -> web.Response:
    """Ends every session of the caller but the current one (all of them for an API token)."""
    auth = await require_user(request)
    await accounts.end_other_sessions(
        await request_pool(request), auth.user_id, keep=request.get(SESSION_ID)
    )
    return web.Response(status=204)


async def end_session(request: web.Request) -> web.Response:
    """Ends one of the caller's sessions (the current one too: that signs out)."""
    auth = await require_user(request)
    session_id = path_id(request, "id", not_found=accounts.SESSION_NOT_FOUND)
    if session_id == request.get(SESSION_ID):
        await sign_out(request)
        return web.Response(status=204)
    await accounts.end_session(await request_pool(request), auth.user_id, session_id)
    return web.Response(status=204)
