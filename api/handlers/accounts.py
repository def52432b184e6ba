"""Accounts: register, sign in (password, then the second factor) and out, API tokens, the
current user."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.auth import Auth, mark_reauthenticated, require_sudo, require_user, sign_in, sign_out
from api.connection import connection, request_pool
from api.errors import api_error, parse_body, path_id, rate_limited
from api.handlers import authenticators as factors
from api.jsonio import json_response
from api.keys import REDIS, SETTINGS
from api.limits import Email
from api.sessions import SESSION_ID
from db import authenticators, sessions, users
from require2fa import ratelimit, reauth, sms, webauthn
from require2fa.ratelimit import Limit
from require2fa.security import hash_password, new_token, token_hash, verify_password

# Password attempts per (client address, account as typed, so unknown accounts count too):
# failures against one account never hold back another, and nobody can lock an account from
# addresses other than their own. A success clears its counter.
LOGIN_LIMIT = Limit("login", 10, 900)


class RegisterIn(BaseModel):
    email: Email
    password: str = Field(min_length=8, max_length=256)
    name: str = Field(default="", max_length=200)


class LoginIn(BaseModel):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=256)


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


def serialize_user(user: Any) -> dict[str, Any]:
    return {
        "id": str(user["id"]),
        "email": user["email"],
        "name": user["name"],
        "has2fa": bool(user["has2fa"]),
        "isSuperuser": user["is_superuser"],
        "dateJoined": user["created_at"].isoformat(),
    }


async def register(request: web.Request) -> web.Response:
    """Creates a user and signs them in."""
    body = await parse_body(request, RegisterIn)
    user = await create_account(request, body)
    return json_response(serialize_user(user), status=201)


async def create_account(request: web.Request, body: RegisterIn) -> Any:
    """Writes the user and signs them in; 409 when the email is taken."""
    async with connection(request) as conn:
        user = await users.create(
            conn, email=str(body.email), name=body.name, password_hash=hash_password(body.password)
        )
        if user is None:
            raise api_error(409, "An account with this email already exists.")
        user = await users.by_id(conn, user["id"])
        assert user is not None
    await sign_in(request, user["id"], half=False)
    return user


def login_key(request: web.Request, email: str) -> str:
    """The (address, account) key of password attempts; the address is the client's as
    `TRUSTED_PROXIES` decides (`api.forwarded`)."""
    return f"{request.remote or '-'}|{email.strip().lower()}"


async def login(request: web.Request) -> web.Response:
    """Checks the password; a user with 2FA is only half signed in until `auth/2fa/` (and when
    a backup phone is their only factor, it is sent a code). Attempts count against the client
    address and account together (429 once over)."""
    body = await parse_body(request, LoginIn)
    user = await check_password(request, body)
    if user["has2fa"]:
        await sign_in(request, user["id"], half=True)
        kinds = await interfaces(request, user["id"])
        extra: dict[str, Any] = {"2faRequired": True, "interfaces": kinds}
        if "sms" in kinds and "totp" not in kinds and "webauthn" not in kinds:
            extra["smsSent"] = await _try_send_login_code(request, user["id"])
        raise api_error(401, "Enter a code from your second factor.", **extra)
    await sign_in(request, user["id"], half=False)
    return json_response(serialize_user(user))


async def check_password(request: web.Request, body: LoginIn) -> Any:
    """The user whose password `body` holds (with `has2fa`). Each attempt counts against the
    (client address, account) pair before the password is checked, so that parallel attempts
    cannot pass the limit: 401, or 429 once over. A success clears the count. Signs nobody in."""
    settings = request.app[SETTINGS]
    redis = request.app[REDIS]
    key = login_key(request, body.email)
    verdict = await ratelimit.hit(redis, settings.redis_namespace, LOGIN_LIMIT, key)
    if not verdict.allowed:
        raise rate_limited(
            verdict.retry_after, "Too many failed sign-in attempts; try again later."
        )
    async with connection(request) as conn:
        user = await users.by_email(conn, body.email)
        if not verify_password(user["password_hash"] if user else None, body.password):
            raise api_error(401, "Invalid email or password.")
        assert user is not None
        user = await users.by_id(conn, user["id"])
        assert user is not None
    await ratelimit.reset(redis, settings.redis_namespace, LOGIN_LIMIT, key)
    return user


async def _try_send_login_code(request: web.Request, user_id: int) -> bool:
    """Sign-in goes on even when the text cannot be sent now; `auth/2fa/sms/` resends."""
    try:
        sent = await factors.send_login_code(
            await request_pool(request), request.app[REDIS], request.app[SETTINGS], user_id
        )
    except web.HTTPException:
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
    pool, redis, settings = await request_pool(request), request.app[REDIS], request.app[SETTINGS]
    await factors.count_attempt(redis, settings, auth.user_id)
    if body.webauthn is not None:
        factor = await factors.verify_webauthn(request, auth, body.webauthn, webauthn.SIGN_IN)
        if factor is None:
            raise api_error(401, factors.KEY_NOT_ACCEPTED, **{"2faRequired": True})
    else:
        assert body.otp is not None
        factor = await factors.verify_second_factor(pool, redis, settings, auth.user_id, body.otp)
    if factor is None:
        raise api_error(401, factors.INVALID_CODE, **{"2faRequired": True})
    await factors.attempt_succeeded(redis, settings, auth.user_id)
    await sign_in(request, auth.user_id, half=False)
    async with pool.acquire() as conn:
        user = await users.by_id(conn, auth.user_id)
    assert user is not None
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
    return json_response({"sent": True, "phone": sms.mask_phone(factor["phone"])})


async def webauthn_challenge(request: web.Request) -> web.Response:
    """Starts the security-key step of a half-signed-in session: `{"publicKey": request
    options}` with a fresh challenge bound to this session (five minutes, single use)."""
    auth = await require_user(request, allow_half=True)
    if not auth.half_signed_in:
        raise api_error(400, "You are already signed in.")
    await parse_body(request, EmptyIn)
    options = await factors.webauthn_options(request, auth, webauthn.SIGN_IN)
    return json_response({"publicKey": options})


async def interfaces(request: web.Request, user_id: int) -> list[str]:
    async with connection(request) as conn:
        rows = await conn.fetch(
            """select distinct type from authenticators
               where user_id = $1 and confirmed_at is not null order by type""",
            user_id,
        )
    return [row["type"] for row in rows]


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
    token = new_token()
    async with connection(request) as conn:
        token_id = await users.create_token(
            conn, user_id=auth.user_id, token_hash=token_hash(token), name=body.name
        )
    return json_response({"id": str(token_id), "token": token, "name": body.name}, status=201)


async def list_api_tokens(request: web.Request) -> web.Response:
    """The caller's API tokens: names and dates (a token itself is only ever shown once)."""
    auth = await require_user(request)
    async with connection(request) as conn:
        rows = await authenticators.tokens(conn, auth.user_id)
    return json_response(
        [
            {
                "id": str(row["id"]),
                "name": row["name"],
                "dateCreated": row["created_at"].isoformat(),
                "lastUsedAt": row["last_used_at"].isoformat() if row["last_used_at"] else None,
            }
            for row in rows
        ]
    )


async def revoke_api_token(request: web.Request) -> web.Response:
    """Deletes one of the caller's API tokens; it stops working at once."""
    auth = await require_user(request)
    token_id = path_id(request, "id")
    async with connection(request) as conn:
        if not await authenticators.revoke_token(conn, auth.user_id, token_id):
            raise api_error(404, "The requested token does not exist.")
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
        await confirm_with_key(request, auth, body.webauthn)
    else:
        if body.webauthn is not None:
            raise api_error(400, "Send one of password, otp or webauthn.")
        await confirm_identity(request, auth.user, password=body.password, otp=body.otp)
    checked_at = await mark_reauthenticated(request)
    until = datetime.fromtimestamp(checked_at, UTC) + reauth.WINDOW
    return json_response({"sudoUntil": until.isoformat()})


async def sudo_webauthn_challenge(request: web.Request) -> web.Response:
    """Starts a re-authentication with a security key: `{"publicKey": request options}`, a
    fresh challenge bound to this session (five minutes, single use); 400 without a key."""
    auth = await require_user(request)
    if auth.token_id is not None:
        raise api_error(400, "API tokens do not need to confirm a password.")
    await parse_body(request, EmptyIn)
    options = await factors.webauthn_options(request, auth, webauthn.SUDO)
    return json_response({"publicKey": options})


async def confirm_with_key(request: web.Request, auth: Auth, credential: dict[str, Any]) -> None:
    """Checks a security key's answer to this session's sudo challenge; 401 `sudo-required`
    when it does not verify, 429 over the second-factor limit. The pages' inline step too."""
    redis, settings = request.app[REDIS], request.app[SETTINGS]
    await factors.count_attempt(redis, settings, auth.user_id)
    if await factors.verify_webauthn(request, auth, credential, webauthn.SUDO) is None:
        raise api_error(401, factors.KEY_NOT_ACCEPTED, code=reauth.REQUIRED_CODE)
    await factors.attempt_succeeded(redis, settings, auth.user_id)


async def confirm_identity(
    request: web.Request, user: Any, *, password: str | None = None, otp: str | None = None
) -> None:
    """Checks `password` or `otp` (exactly one) for `user`; 400 when neither or both, 401
    `sudo-required` when wrong, 429 once over the limits. The pages' inline step calls it too."""
    if (password is None) == (otp is None):
        raise api_error(
            400,
            "Invalid request.",
            errors={"password": ["Send either your password or a code (otp)."]},
        )
    if password is not None:
        try:
            await check_password(request, LoginIn(email=user["email"], password=password))
        except web.HTTPException as exc:
            if exc.status != 401:
                raise
            raise api_error(401, "Invalid password.", code=reauth.REQUIRED_CODE) from None
        return
    assert otp is not None
    pool, redis, settings = await request_pool(request), request.app[REDIS], request.app[SETTINGS]
    await factors.count_attempt(redis, settings, user["id"])
    if await factors.verify_second_factor(pool, redis, settings, user["id"], otp) is None:
        raise api_error(401, factors.INVALID_CODE, code=reauth.REQUIRED_CODE)
    await factors.attempt_succeeded(redis, settings, user["id"])


# --- Password and sessions ----------------------------------------------------------------


async def change_password(request: web.Request) -> web.Response:
    """Sets a new password after checking the current one; ends the user's other sessions."""
    auth = await require_user(request)
    body = await parse_body(request, PasswordIn)
    await confirm_identity(request, auth.user, password=body.current)
    async with connection(request) as conn, conn.transaction():
        await conn.execute(
            "update users set password_hash = $2 where id = $1",
            auth.user_id,
            hash_password(body.password),
        )
        await sessions.end_others(conn, auth.user_id, keep=request.get(SESSION_ID))
    if auth.token_id is None:
        await mark_reauthenticated(request)
    return web.Response(status=204)


def serialize_session(row: Any, current: int | None) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "current": row["id"] == current,
        "createdAt": row["created_at"].isoformat(),
        "lastSeenAt": row["last_seen_at"].isoformat(),
        "ipAddress": row["ip_address"],
        "userAgent": row["user_agent"],
    }


async def list_sessions(request: web.Request) -> web.Response:
    """The caller's signed-in sessions (browsers), the current one marked."""
    auth = await require_user(request)
    async with connection(request) as conn:
        rows = await sessions.for_user(conn, auth.user_id)
    current = request.get(SESSION_ID)
    return json_response([serialize_session(row, current) for row in rows])


async def end_other_sessions(request: web.Request) -> web.Response:
    """Ends every session of the caller but the current one (all of them for an API token)."""
    auth = await require_user(request)
    async with connection(request) as conn:
        await sessions.end_others(conn, auth.user_id, keep=request.get(SESSION_ID))
    return web.Response(status=204)


async def end_session(request: web.Request) -> web.Response:
    """Ends one of the caller's sessions (the current one too: that signs out)."""
    auth = await require_user(request)
    session_id = path_id(request, "id", not_found="The requested session does not exist.")
    if session_id == request.get(SESSION_ID):
        await sign_out(request)
        return web.Response(status=204)
    async with connection(request) as conn:
        if not await sessions.end(conn, auth.user_id, session_id):
            raise api_error(404, "The requested session does not exist.")
    return web.Response(status=204)
