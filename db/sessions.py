"""Server-side sessions: one row per browser session, found by the hash of the cookie's key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

# last_seen_at is written at most once a minute, to spare a write on every request.
_TOUCH = "interval '1 minute'"


async def load(conn: asyncpg.Connection, key_hash: bytes) -> asyncpg.Record | None:
    """The live session with this key (marking it seen), or None."""
    return await conn.fetchrow(
        f"""with t as (
               update sessions set last_seen_at = now()
               where key_hash = $1 and expires_at > now() and last_seen_at < now() - {_TOUCH}
               returning id)
           select id, user_id, data, created_at from sessions
           where key_hash = $1 and expires_at > now()""",
        key_hash,
    )


async def create(
    conn: asyncpg.Connection,
    *,
    key_hash: bytes,
    data: dict[str, Any],
    max_age: timedelta,
    ip_address: str | None,
    user_agent: str | None,
) -> int:
    return await conn.fetchval(
        """insert into sessions (key_hash, user_id, data, expires_at, ip_address, user_agent)
           values ($1, $2, $3, now() + $4::interval, $5, $6) returning id""",
        key_hash,
        _user_id(data),
        data,
        max_age,
        ip_address,
        user_agent,
    )


async def update(conn: asyncpg.Connection, key_hash: bytes, data: dict[str, Any]) -> bool:
    """Writes the session's data; False when it has ended meanwhile (it is not brought back)."""
    done = await conn.execute(
        """update sessions set data = $2, user_id = $3
           where key_hash = $1 and expires_at > now()""",
        key_hash,
        data,
        _user_id(data),
    )
    return done != "UPDATE 0"


async def delete(conn: asyncpg.Connection, key_hash: bytes) -> None:
    await conn.execute("delete from sessions where key_hash = $1", key_hash)


async def for_user(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    """The user's live sessions, most recently seen first."""
    return await conn.fetch(
        """select id, created_at, last_seen_at, ip_address, user_agent from sessions
           where user_id = $1 and expires_at > now() order by last_seen_at desc, id desc""",
        user_id,
    )


async def end(conn: asyncpg.Connection, user_id: int, session_id: int) -> bool:
    """Ends one of the user's sessions; False when they have no such session."""
    done = await conn.execute(
        "delete from sessions where id = $1 and user_id = $2", session_id, user_id
    )
    return done != "DELETE 0"


async def end_others(conn: asyncpg.Connection, user_id: int, keep: int | None) -> int:
    """Ends every session of the user but `keep` (the caller's own, or None: all of them)."""
    done = await conn.execute(
        "delete from sessions where user_id = $1 and id is distinct from $2", user_id, keep
    )
    return int(done.split()[-1])


async def purge_expired(conn: asyncpg.Connection, *, limit: int = 10_000) -> int:
    done = await conn.execute(
        """delete from sessions where id in (
               select id from sessions where expires_at <= now() limit $1)""",
        limit,
    )
    return int(done.split()[-1])


def _user_id(data: dict[str, Any]) -> int | None:
    uid = data.get("uid")
    return uid if isinstance(uid, int) else None
