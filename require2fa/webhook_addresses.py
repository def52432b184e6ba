"""Which URLs a webhook may name and which addresses a delivery may ever connect to: outside
development only `https://` and only public addresses (`check_url`, `check_destination`,
`forbidden_address`). Delivery checks the address of every socket it opens (`jobs.webhook_client`),
so a name that resolved to a public address at creation and to a private one later (DNS
rebinding) is still refused."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from require2fa import errors
from require2fa.settings import Settings

MAX_URL = 2048
RESOLVE_TIMEOUT = 5.0


class Invalid(errors.Invalid):
    """A subscription the rules refuse; `field` names the input, `str()` is the sentence."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("webhook-invalid", message, field=field, summary=message)


class BlockedAddress(OSError):
    """A connection to an address webhooks may never reach (loopback, private, link-local,
    multicast, reserved) outside development."""


def forbidden_address(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a webhook may never connect to this address outside development: anything
    that is not a global unicast address (loopback, RFC 1918 and other private ranges,
    carrier-grade NAT, link-local such as the cloud metadata address, multicast, reserved,
    unspecified), including IPv4 addresses written as IPv6 (`::ffff:127.0.0.1`)."""
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return True
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None and forbidden_address(embedded):
            return True
    return (
        not address.is_global
        or address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_reserved
        or address.is_unspecified
    )


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_url(url: str, settings: Settings) -> str:
    """The URL as it will be posted to, or `Invalid`: absolute `https://` (also `http://` in
    development), a host, no user name or password, no fragment; outside development a host
    written as an address must be a public one."""
    url = url.strip()
    if not url or len(url) > MAX_URL:
        raise Invalid("url", f"Enter a URL of at most {MAX_URL} characters.")
    if any(ord(char) < 33 or ord(char) == 127 for char in url):
        raise Invalid("url", "The URL must not contain spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Invalid("url", "Enter a valid URL.") from None
    schemes = ("https", "http") if settings.development else ("https",)
    if parts.scheme.lower() not in schemes:
        raise Invalid("url", "The URL must start with https://.")
    host = parts.hostname
    if not host:
        raise Invalid("url", "The URL must name a host.")
    if parts.username is not None or parts.password is not None:
        raise Invalid("url", "The URL must not contain a user name or password.")
    if parts.fragment or url.endswith("#"):
        raise Invalid("url", "The URL must not contain a fragment (#).")
    if port == 0:
        raise Invalid("url", "Enter a valid port.")
    literal = _literal(host)
    if not settings.development and literal is not None and forbidden_address(literal):
        raise Invalid("url", "The URL must not point to a private, loopback or link-local address.")
    return url


async def check_destination(url: str, settings: Settings) -> None:
    """Outside development, the URL's host must resolve, and only to public addresses.

    (A check at creation, for a clear answer; delivery checks every connection again.)"""
    if settings.development:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _literal(host) is not None:
        return  # judged by check_url
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(
                host, parts.port or 443, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
    except (OSError, TimeoutError, UnicodeError):
        raise Invalid("url", "The URL's host cannot be resolved.") from None
    if not infos or any(forbidden_address(str(info[4][0])) for info in infos):
        raise Invalid(
            "url", "The URL's host resolves to a private, loopback or link-local address."
        )


def audit_host(url: str) -> str:
    """What the audit log keeps of a webhook's URL: its host (and port) only. Paths, queries and
    user info often carry the receiver's credentials, and managers read the audit log while only
    owners may see webhooks (issue 25, point 7)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host
