"""Who is asking: a bearer API token or the encrypted session cookie.

A session is *half signed in* after a correct password for a user with 2FA: it names the user
but may only call the second-factor step and logout until that step succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aiohttp import web
from aiohttp_session import get_session, new_session
from aiohttp_session import setup as setup_sessions
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from api.errors import api_error
from api.keys import PG
from db import users
from db.audit import Actor
from require2fa.security import derive_key, token_hash
from require2fa.settings import Settings

SESSION_COOKIE = "r2fa_session"
SESSION_MAX_AGE = 14 * 24 * 3600
_AUTH = web.RequestKey("auth", object)


@dataclass(frozen=True)
class Auth:
    user: asyncpg.Record
    token_id: int | None = None
    half_signed_in: bool = False

    @property
    def user_id(self) -> int:
        return self.user["id"]


def setup(app: web.Application, settings: Settings) -> None:
    storage = EncryptedCookieStorage(
        derive_key(settings.secret_key, "session-cookie"),
        cookie_name=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=settings.secure_cookies,
        path="/",
    )
    setup_sessions(app, storage)


async def authenticate(request: web.Request) -> Auth | None:
    """The caller, or None; looked up once per request."""
    if _AUTH in request:
        return request[_AUTH]  # type: ignore[return-value]
    auth: Auth | None = None
    header = request.headers.get("Authorization", "")
    pool = request.app[PG]
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise api_error(401, "Invalid authorization header; expected 'Bearer <token>'.")
        async with pool.acquire() as conn:
            row = await users.by_token(conn, token_hash(token.strip()))
        if row is None:
            raise api_error(401, "Invalid token.")
        auth = Auth(user=row, token_id=row["token_id"])
    else:
        session = await get_session(request)
        user_id = session.get("uid")
        if isinstance(user_id, int):
            async with pool.acquire() as conn:
                row = await users.by_id(conn, user_id)
            if row is None:
                session.invalidate()
            else:
                auth = Auth(user=row, half_signed_in=bool(session.get("half")))
    request[_AUTH] = auth
    return auth


async def require_user(request: web.Request, *, allow_half: bool = False) -> Auth:
    """The signed-in caller, or 401."""
    auth = await authenticate(request)
    if auth is None:
        raise api_error(401)
    if auth.half_signed_in and not allow_half:
        raise api_error(401, "Finish signing in with your second factor.", **{"2faRequired": True})
    return auth


async def sign_in(request: web.Request, user_id: int, *, half: bool) -> None:
    """Start a fresh session (a new cookie, so a fixated one is useless) for `user_id`.

    An invitation link looked at before signing in stays remembered, so that setting up 2FA
    afterwards can still join it.
    """
    invite = (await get_session(request)).get("invite")
    session = await new_session(request)
    session["uid"] = user_id
    session["half"] = half
    if invite is not None:
        session["invite"] = invite
    request.pop(_AUTH, None)


async def sign_out(request: web.Request) -> None:
    session = await get_session(request)
    session.invalidate()
    request.pop(_AUTH, None)


def actor(request: web.Request, auth: Auth) -> Actor:
    return Actor(
        user_id=auth.user_id,
        token_id=auth.token_id,
        label=auth.user["email"],
        ip_address=request.remote,
    )
