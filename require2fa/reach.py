"""Reaching the servers that settings name, with one line when it fails.

`Unreachable` is what a process says at start when DATABASE_URL or REDIS_URL names a server it
cannot reach: the setting, the address tried (without its password) and why, on one line.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis
import redis.exceptions

CONNECT_TIMEOUT = 10.0


class Unreachable(RuntimeError):
    """`str(err)`: `VARIABLE: cannot connect to URL (why)`, one line."""

    def __init__(self, variable: str, url: str, why: str) -> None:
        super().__init__(f"{variable}: cannot connect to {redact(url)} ({why})")
        self.variable = variable


def redact(url: str) -> str:
    """`url` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def why(err: BaseException) -> str:
    """A short reason for a failed connection."""
    if isinstance(err, asyncpg.InvalidCatalogNameError):
        return f"{_first_line(err)}; create it, or name one that exists"
    if isinstance(err, socket.gaierror):
        return "unknown host"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused: is the server running?"
    if isinstance(err, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:.0f}s"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    if isinstance(err, redis.exceptions.ConnectionError):
        text = _first_line(err)
        if (
            "refused" in text.lower()
            or text.startswith("Error 111 ")
            or "Connect call failed" in text
        ):
            return "connection refused: is the server running?"
        if "Name or service not known" in text or "nodename nor servname" in text:
            return "unknown host"
        return text
    return _first_line(err)


async def check_redis(url: str) -> None:
    """PING the Redis at `url`; `Unreachable` naming REDIS_URL when it does not answer."""
    try:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT)
    except ValueError as err:
        raise Unreachable("REDIS_URL", url, why(err)) from None
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT + 1):
            await client.ping()  # type: ignore[misc]
    except (OSError, TimeoutError, redis.exceptions.RedisError) as err:
        raise Unreachable("REDIS_URL", url, why(err)) from None
    finally:
        await client.aclose()
