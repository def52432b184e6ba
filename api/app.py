"""The aiohttp application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import web

from api import auth, headers
from api.connection import connection_middleware
from api.errors import error_middleware
from api.keys import PG, REDIS, SETTINGS, SSO_KEYS
from api.limits import MAX_BODY_BYTES
from api.observe import observe_middleware
from api.routes import add_routes
from db.pool import create_pool
from require2fa.settings import Settings
from require2fa.sso import KeyCache

# Slowloris (issue 25, point 10): how long a connection may go without a complete request head,
# from when it opens or its last answer ends. aiohttp arms its keep-alive timer when a
# connection opens and closes the connection when the timer fires while no request has
# started, however slowly the head's bytes trickle in; a body is read by the handler, outside
# it. Heads are also capped in size (aiohttp's defaults, written out). How many connections one
# address may hold is the reverse proxy's to cap (docs/SECURITY.md): behind it every connection
# comes from the proxy's address.
HEAD_TIMEOUT_SECONDS = 15.0
MAX_LINE_BYTES = 8190
MAX_HEADERS = 128


def server_options(*, head_timeout: float = HEAD_TIMEOUT_SECONDS) -> dict[str, float | int]:
    """The options `web.run_app` / `web.AppRunner` pass to each connection's `RequestHandler`."""
    return {
        "keepalive_timeout": head_timeout,
        "max_line_size": MAX_LINE_BYTES,
        "max_field_size": MAX_LINE_BYTES,
        "max_headers": MAX_HEADERS,
    }


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        # observe_middleware first: it finds the client's address behind our proxies, and it
        # sees every answer, the error pages' included; error_middleware next: its refusals
        # (bad query parameters, cross-site writes, `api.csrf`) and every error are JSON;
        # connection_middleware outside the sessions' (added by auth.setup), so that loading
        # and saving a session use the request's one connection too.
        middlewares=[
            observe_middleware,
            error_middleware,
            connection_middleware,
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SETTINGS] = settings
    app[SSO_KEYS] = KeyCache()
    auth.setup(app, settings)
    headers.setup(app)
    app.cleanup_ctx.append(_resources)
    add_routes(app)
    if settings.development:
        from api.pages import mailbox  # what the local SMTP sink received; never in production

        mailbox.add_routes(app)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    """Opens the PostgreSQL pool and the Redis client for the app's lifetime."""
    settings = app[SETTINGS]
    assert settings.database_url and settings.redis_url, "resolve services before create_app"
    # Requests take no session state (no `SET`, session advisory lock or `LISTEN`): their
    # connections go back to the pool without asyncpg's reset round trip (`db.pool`).
    app[PG] = await create_pool(settings.database_url, max_size=20, clean_sessions=True)
    app[REDIS] = aioredis.Redis.from_url(settings.redis_url)
    yield
    await app[REDIS].aclose()
    await app[PG].close()
