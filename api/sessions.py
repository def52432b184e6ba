"""Sessions kept on the server, through aiohttp-session's storage interface.

The cookie holds only a random key (256 bits); PostgreSQL keeps the key's SHA-256 and the
session's data (`db/sessions.py`). Nothing is read until a handler asks for the session
(`aiohttp_session.get_session`), so bearer-token requests never touch the table. Ending a
session deletes its row: a copy of the old cookie is then just an unknown key.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web
from aiohttp_session import AbstractStorage, Session

from api.connection import connection
from db import sessions
from require2fa.security import new_token, token_hash

# The row id of the session this request loaded or created (for "current" in the list and
# for ending every other session); absent for a request with no stored session.
SESSION_ID = web.RequestKey("session_id", int)
_MAX_KEY = 128  # our keys are 43 characters; anything much longer is not one of ours


class PostgresStorage(AbstractStorage):
    """Session data in the `sessions` table, found by the hash of the cookie's key."""

    async def load_session(self, request: web.Request) -> Session:
        key = self.load_cookie(request)
        if not key or len(key) > _MAX_KEY:
            return Session(None, data=None, new=True, max_age=self.max_age)
        async with connection(request) as conn:
            row = await sessions.load(conn, token_hash(key))
        if row is None:
            return Session(None, data=None, new=True, max_age=self.max_age)
        request[SESSION_ID] = row["id"]
        data = {"created": int(row["created_at"].timestamp()), "session": dict(row["data"])}
        return Session(key, data=data, new=False, max_age=self.max_age)  # type: ignore[arg-type]

    async def save_session(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        key = session.identity
        data: dict[str, Any] = dict(session)
        async with connection(request) as conn:
            if session.empty:
                if key is not None:
                    await sessions.delete(conn, token_hash(str(key)))
                request.pop(SESSION_ID, None)
                self.save_cookie(response, "", max_age=session.max_age)
                return
            if key is None:
                key = new_token()
                request[SESSION_ID] = await sessions.create(
                    conn,
                    key_hash=token_hash(key),
                    data=data,
                    max_age=timedelta(seconds=self.max_age or 0),
                    ip_address=request.remote,
                    user_agent=request.headers.get("User-Agent", "")[:500] or None,
                )
                self.save_cookie(response, key, max_age=session.max_age)
                return
            if not await sessions.update(conn, token_hash(str(key)), data):
                # Ended meanwhile (signed out elsewhere, ended from another session).
                self.save_cookie(response, "", max_age=session.max_age)


async def end_current(request: web.Request, session: Session) -> None:
    """Deletes the stored row of `session` now (before a new session replaces it)."""
    if session.identity is not None:
        async with connection(request) as conn:
            await sessions.delete(conn, token_hash(str(session.identity)))
    request.pop(SESSION_ID, None)
