"""Who is asking: a bearer API token or the session cookie (a key to a server-side session,
`api.sessions`).

A session is *half signed in* after a correct password for a user with 2FA: it names the user
but may only call the second-factor step and logout until that step succeeds. A session also
remembers when its user last proved who they are (`require2fa.reauth`): `require_sudo`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web
from aiohttp_session import get_session, new_session
from aiohttp_session import setup as setup_sessions

from api.connection import connection
from api.errors import api_error
from api.keys import SESSION_COOKIE
from api.sessions import PostgresStorage, end_current
from db import access
from db.access import Caller, Row
from db.audit import Actor
from require2fa import reauth
from require2fa.security import token_hash
from require2fa.settings import Settings

SESSION_MAX_AGE = 14 * 24 * 3600
_AUTH = web.RequestKey("auth", object)


@dataclass(frozen=True)
class Auth:
    user: Row  # the user's row, with `has2fa` (`db.access`)
    token_id: int | None = None
    half_signed_in: bool = False

    @property
    def user_id(self) -> int:
        return self.user["id"]


def setup(app: web.Application, settings: Settings) -> None:
    storage = PostgresStorage(
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
    auth, _found = await _identify(request, None)
    return auth


async def _identify(request: web.Request, slug: str | None) -> tuple[Auth | None, Caller | None]:
    """The caller (remembered for the request), and what `db.access` read with them: the
    organization `slug` and their membership of it."""
    auth: Auth | None = None
    found: Caller | None = None
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise api_error(401, "Invalid authorization header; expected 'Bearer <token>'.")
        async with connection(request) as conn:
            found = await access.by_token(conn, token_hash(token.strip()), slug)
        if found is None:
            raise api_error(401, "Invalid token.")
        auth = Auth(user=found.user, token_id=found.user["token_id"])
    else:
        session = await get_session(request)
        user_id = session.get("uid")
        if isinstance(user_id, int):
            async with connection(request) as conn:
                found = await access.by_user(conn, user_id, slug)
            if found is None:
                session.invalidate()
            else:
                auth = Auth(user=found.user, half_signed_in=bool(session.get("half")))
    request[_AUTH] = auth
    return auth, found


async def caller_in(request: web.Request, slug: str | None) -> tuple[Auth, Row | None, Row | None]:
    """`require_user`'s caller, the organization `slug` (None: no organization) and the
    caller's membership of it (`api.access` decides what they allow): read in the statement that
    authenticates the request, or in one statement of their own when it is authenticated
    already."""
    if _AUTH in request:
        auth = await require_user(request)
        async with connection(request) as conn:
            found = await access.by_user(conn, auth.user_id, slug)
    else:
        _auth, found = await _identify(request, slug)
        auth = await require_user(request)
    if found is None:
        return auth, None, None
    return auth, found.org, found.member


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
    old = await get_session(request)
    invite = old.get("invite")
    await end_current(request, old)
    session = await new_session(request)
    session["uid"] = user_id
    session["half"] = half
    if not half:
        # A password (and, for a user with 2FA, a second factor) was just checked.
        session[reauth.SESSION_FIELD] = time.time()
    if invite is not None:
        session["invite"] = invite
    request.pop(_AUTH, None)


async def sign_out(request: web.Request) -> None:
    """Ends the session for good (its row is deleted; the cookie is cleared)."""
    session = await get_session(request)
    session.invalidate()
    request.pop(_AUTH, None)


async def require_sudo(request: web.Request) -> Auth:
    """The signed-in caller, when they may make a sensitive change now: an API token, or a
    session whose password or second factor was checked within `reauth.WINDOW`. Else 401
    `{"code": "sudo-required"}` (`POST auth/sudo/` then lets them continue). Call it after the
    permission checks, so that someone who may not make the change at all gets their 403."""
    auth = await require_user(request)
    if not await recently_authenticated(request, auth):
        raise api_error(401, reauth.REQUIRED_DETAIL, code=reauth.REQUIRED_CODE)
    return auth


async def recently_authenticated(request: web.Request, auth: Auth) -> bool:
    """Whether `auth` may make a sensitive change now (what `require_sudo` asks), for the domain
    functions that decide it themselves."""
    if auth.token_id is not None:
        return True
    session = await get_session(request)
    return reauth.is_recent(session.get(reauth.SESSION_FIELD))


async def mark_reauthenticated(request: web.Request) -> float:
    """Records that the session's user just proved who they are; the time recorded."""
    now = time.time()
    session = await get_session(request)
    session[reauth.SESSION_FIELD] = now
    return now


def actor(request: web.Request, auth: Auth) -> Actor:
    return Actor(
        user_id=auth.user_id,
        token_id=auth.token_id,
        label=auth.user["email"],
        ip_address=request.remote,
    )
