"""One PostgreSQL connection per request: authentication, organization access and the handler
share it.

`connection_middleware` gives each request a holder; the first `async with connection(request)`
acquires a pool connection, later ones reuse it, and the middleware hands it back when the
request ends (one acquire per request instead of one per step; the web pool gives it back
without a reset query, `db.pool.create_pool(clean_sessions=True)`). Code that needs
the pool itself (a second connection, a domain function that acquires its own) calls
`await request_pool(request)`, which first hands the request's connection back: a request never
holds one connection while it waits for another, so a busy pool cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

from api.keys import PG

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Held:
    """The request's connection, acquired on first use."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.conn: asyncpg.Connection | None = None
        self.open = True  # False once the request has ended: then nothing is held any more

    async def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await self.pool.release(conn)


_HELD = web.RequestKey("connection", _Held)


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    held = _Held(request.app[PG])
    request[_HELD] = held
    try:
        return await handler(request)
    finally:
        held.open = False
        await held.release()


class connection:  # a context manager: `async with connection(request) as conn`
    """The request's connection (acquired now if it has none yet); outside a request's
    lifetime, a connection of the pool's own for the block."""

    __slots__ = ("_request", "_own")

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._own: Any = None

    async def __aenter__(self) -> asyncpg.Connection:
        held = self._request.get(_HELD)
        if held is None or not held.open:
            self._own = self._request.app[PG].acquire()
            return await self._own.__aenter__()
        if held.conn is None:
            held.conn = await held.pool.acquire()
        return held.conn

    async def __aexit__(self, *exc: object) -> None:
        if self._own is not None:
            await self._own.__aexit__(*exc)


async def request_pool(request: web.Request) -> asyncpg.Pool:
    """The pool, after handing the request's connection back (see the module's docstring)."""
    held = request.get(_HELD)
    if held is not None:
        await held.release()
    return request.app[PG]
