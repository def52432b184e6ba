"""The HTTP client that webhook deliveries are posted through: connections reused, a time limit
per request, no proxy from the environment, and outside development every address checked just
before it is connected to (`require2fa.webhooks.forbidden_address`), so that a name resolving or
rebinding to a private address is refused."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from require2fa import webhooks
from require2fa.settings import Settings

log = structlog.get_logger(__name__)

CONCURRENCY = 2  # requests in flight at once per webhook (`db.webhooks.claim` holds no more)
# Connections of one session: beyond what a dispatch ever has in flight (its claimed rows), so
# that one receiver's hanging requests never make another's wait for a connection. No limit
# per host: webhooks of different organizations often share one (they have their own cap).
CONNECTIONS = 512
TIMEOUT = 10.0  # seconds for a whole request: connect, send, the answer's head and first bytes
CONNECT_TIMEOUT = 3.0  # an unreachable receiver gives up quickly
USER_AGENT = "require2fa-webhooks/1"


def _guarded_socket(addr_info: Any) -> socket.socket:
    """aiohttp's socket factory outside development: refuses, before connecting, any address
    that webhooks may not reach. This is the address actually connected to, whatever the name
    resolved to earlier."""
    family, type_, proto, _, address = addr_info
    if webhooks.forbidden_address(str(address[0])):
        raise webhooks.BlockedAddress(f"webhook address not allowed: {address[0]}")
    return socket.socket(family=family, type=type_, proto=proto)


class _GuardedResolver(AbstractResolver):
    """Drops forbidden addresses from what a name resolves to, so that a name with only such
    addresses fails with a clear `BlockedAddress` (the socket factory checks again)."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        allowed = [item for item in found if not webhooks.forbidden_address(item["host"])]
        if not allowed:
            raise webhooks.BlockedAddress(
                f"webhook address not allowed: {host} resolves to "
                + ", ".join(sorted({item["host"] for item in found}))
            )
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


def client_session(
    settings: Settings,
    *,
    connections: int = CONNECTIONS,
    timeout: float = TIMEOUT,
    resolver: AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """The session one dispatch posts through: connections kept open and reused, at most
    `connections` of them, `timeout` seconds per request (`CONNECT_TIMEOUT` to connect);
    outside development every connection is checked (above), whatever `resolver` (tests: one
    that lies) answers."""
    guarded = not settings.development
    connector = aiohttp.TCPConnector(
        limit=connections,
        limit_per_host=0,
        keepalive_timeout=30,
        resolver=resolver or (_GuardedResolver() if guarded else None),
        socket_factory=_guarded_socket if guarded else None,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(CONNECT_TIMEOUT, timeout)),
        trust_env=False,  # never through a proxy named in the environment
        headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
    )


def blocked(err: BaseException | None) -> bool:
    """Whether the connection was refused by our address check (not by the receiver)."""
    while err is not None:
        if isinstance(err, webhooks.BlockedAddress) or "webhook address not allowed" in str(err):
            return True
        err = err.__cause__ or getattr(err, "os_error", None)
    return False


def describe(err: BaseException) -> str:
    text = str(err)
    name = type(err).__name__
    return f"{name}: {text}"[:500] if text else name
