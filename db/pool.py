"""asyncpg pools with JSON codecs, for the web process and the workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg
import orjson

from require2fa.reach import CONNECT_TIMEOUT, Unreachable, why

# What a read takes: the pool (it acquires a connection for itself), or a connection already
# held, as a web request's own (api.connection), so that the request needs no second one.
Source: TypeAlias = asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@asynccontextmanager
async def using(source: Source) -> AsyncIterator[asyncpg.Connection]:
    """A connection of `source`: the connection itself, or one of the pool's for the block."""
    if isinstance(source, asyncpg.Pool):
        async with source.acquire() as conn:
            yield conn
    else:
        yield source


# orjson: the members pages decode a settings object per row. Keys that are not strings are
# written as strings, as the standard library does.
_OPTIONS = orjson.OPT_NON_STR_KEYS


def _encode_json(value: object) -> str:
    return orjson.dumps(value, option=_OPTIONS).decode()


def _encode_jsonb(value: object) -> bytes:
    # jsonb's binary format: version 1, then the text
    return b"\x01" + orjson.dumps(value, option=_OPTIONS)


def _decode_jsonb(data: bytes) -> object:
    return orjson.loads(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "json", encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog"
    )
    # Binary, so that COPY (copy_records_to_table) can write jsonb columns too.
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )


# Asked of the server for each of our sessions, so that the server notices within about half a
# minute a client whose host vanished from the network (power, cable, partition) and ends its
# session: its transaction rolls back and its row and advisory locks (a batch's, the clock's
# leadership) go to the others. Linux's defaults take two hours idle, or about fifteen minutes
# with replies unacknowledged. Ignored on Unix sockets. docs/SCALING.md.
SERVER_SETTINGS = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "20000",  # ms of data unacknowledged by the client
}


async def _known_clean(conn: asyncpg.Connection) -> None:
    """A released connection's reset for code that leaves no session state behind: nothing
    beyond what asyncpg does before calling it (rolling back a transaction left open, dropping
    the connection's listener callbacks), so no round trip. asyncpg's default reset
    (`Connection.get_reset_query`: `pg_advisory_unlock_all()`, `CLOSE ALL`, `UNLISTEN *`,
    `RESET ALL`) costs one round trip per release, for state that only session-level statements
    make: a `SET` without `LOCAL`, a session advisory lock, a `LISTEN`, a cursor `WITH HOLD`.
    None of those runs on the web process's connections (`set local` and transaction advisory
    locks end with their transaction; the plan lock, the clock's leadership and the listeners
    take the workers' and the clock's own connections): `tests/db/test_pool.py` checks every
    connection after the requests of each API test module it runs."""


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    clean_sessions: bool = False,
    idle_seconds: float = 300.0,
) -> asyncpg.Pool:
    """A pool with our codecs; `clean_sessions`: its users take no session state, so a
    connection goes back without asyncpg's reset query (`_known_clean`). A connection idle for
    `idle_seconds` is closed (asyncpg's default)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_known_clean if clean_sessions else None,
        max_inactive_connection_lifetime=idle_seconds,
        command_timeout=60,
        server_settings=SERVER_SETTINGS,
    )
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn, server_settings=SERVER_SETTINGS)
    await _init_connection(conn)
    return conn


# What connecting to a wrong or absent server raises.
CONNECT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError)


async def connect_checked(dsn: str) -> asyncpg.Connection:
    """`connect`, with every way of not reaching the database as one `Unreachable`."""
    try:
        return await asyncio.wait_for(connect(dsn), CONNECT_TIMEOUT)
    except CONNECT_ERRORS as err:
        raise Unreachable("DATABASE_URL", dsn, why(err)) from None


async def create_pool_checked(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """`create_pool`, with every way of not reaching the database as one `Unreachable`."""
    try:
        return await asyncio.wait_for(
            create_pool(dsn, min_size=min_size, max_size=max_size), CONNECT_TIMEOUT
        )
    except CONNECT_ERRORS as err:
        raise Unreachable("DATABASE_URL", dsn, why(err)) from None


async def ping(conn: asyncpg.Connection) -> None:
    """A round trip to the server (the health check)."""
    await conn.fetchval("select 1")
