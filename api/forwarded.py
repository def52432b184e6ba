"""The client's address and scheme behind reverse proxies (`TRUSTED_PROXIES`).

A proxy appends the address it received the request from to `X-Forwarded-For`, so the header
reads left to right from the first hop to the last; anything left of a proxy we trust may have
been written by the client itself. The client is therefore the rightmost address that is not
one of our proxies, reached by walking from the connecting peer leftwards only while each hop
is trusted. Nobody is trusted by default: the connecting address is the client's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

from api.keys import SETTINGS
from require2fa.settings import Network


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], networks: Sequence[Network]
) -> str | None:
    """The rightmost address of `peer` preceded by `X-Forwarded-For`'s hops that is not in
    `networks` (the leftmost believable hop when every one is trusted)."""
    if peer is None or not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    address = peer
    for hop in reversed(hops):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            break  # a value no proxy of ours writes: believe nothing further left
        if not _trusted(address, networks):
            break
    return address


def as_client_sent(request: web.Request) -> web.Request:
    """`request` with its client's address (and scheme) when a trusted proxy forwarded it, else
    `request` itself. `api.observe` calls it first, so that everything after it (logs, audit,
    rate limits) sees the client's address."""
    networks = request.app[SETTINGS].trusted_networks
    peer = request.remote
    if peer is None or not networks or not _trusted(peer, networks):
        return request
    remote = client_address(peer, request.headers.getall("X-Forwarded-For", []), networks) or peer
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
    scheme = proto if proto in ("http", "https") else request.scheme
    return request.clone(remote=remote, scheme=scheme)
