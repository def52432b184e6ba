"""Shared steps of the security tests."""

from __future__ import annotations

import asyncpg

from api.auth import SESSION_COOKIE


def cookie_of(client) -> str:
    """The session cookie the client's jar holds now."""
    for morsel in client.session.cookie_jar:
        if morsel.key == SESSION_COOKIE:
            return morsel.value
    raise AssertionError("no session cookie")


def use_cookie(client, value: str) -> None:
    """Puts `value` back as the client's session cookie (a saved copy, replayed)."""
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({SESSION_COOKIE: value})


async def age_reauthentication(pool: asyncpg.Pool, seconds: int = 601) -> None:
    """Moves every session's last password or code check `seconds` into the past (as if the
    person had signed in that long ago)."""
    async with pool.acquire() as conn:
        await conn.execute(
            """update sessions set data = data || jsonb_build_object(
                   'reauth_at', extract(epoch from now()) - $1::int)""",
            seconds,
        )
