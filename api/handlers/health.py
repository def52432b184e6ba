"""Operations: health and metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.connection import connection
from api.jsonio import json_response
from api.keys import REDIS
from api.shapes import Checks, Health
from db import pool


async def healthz(request: web.Request) -> web.Response:
    """200 when PostgreSQL and Redis answer, 503 naming what does not."""
    checks: Checks = {"database": "ok", "redis": "ok"}
    try:
        async with asyncio.timeout(2), connection(request) as conn:
            await pool.ping(conn)
    except Exception as err:  # any failure means unhealthy; say which
        checks["database"] = f"error: {type(err).__name__}"
    try:
        async with asyncio.timeout(2):
            await request.app[REDIS].ping()  # type: ignore[misc]
    except Exception as err:
        checks["redis"] = f"error: {type(err).__name__}"
    healthy = checks["database"] == checks["redis"] == "ok"
    body: Health = {"status": "ok" if healthy else "unavailable", "checks": checks}
    if not healthy:
        body["detail"] = "A dependency is unreachable."
    return json_response(body, status=200 if healthy else 503)


async def metrics(_request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response
