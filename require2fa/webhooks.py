"""Webhooks: the rules of a subscription and of what is sent to it (docs/BEHAVIOUR.md).

- Which URLs may be subscribed (`check_url`, `check_destination`) and which addresses may ever
  be connected to (`forbidden_address`): outside development, only `https://` and only public
  addresses. Delivery checks the address of every socket it opens (`jobs.webhooks`), so a name
  that resolved to a public address when the webhook was created and resolves to a private one
  later (DNS rebinding) is still refused.
- The secret: random, shown once, stored encrypted under a key derived from SECRET_KEY, used as
  the HMAC-SHA256 key of `X-Require2FA-Signature: sha256=<hex>` over the raw body.
- The body: the audit entry as JSON, built from the entry (which never changes).
- The use cases `create` and `delete`, each with its audit entry, in the caller's transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from cryptography.fernet import Fernet, InvalidToken

from db import audit
from db import webhooks as queries
from db.audit import Actor
from require2fa import audit_log, errors
from require2fa.security import fernet_key
from require2fa.settings import Settings

ALL_EVENTS = "*"
MAX_URL = 2048
MAX_EVENTS = 100
SECRET_PURPOSE = "webhook-secret"
SECRET_PREFIX = "whsec_"
SIGNATURE_HEADER = "X-Require2FA-Signature"
EVENT_HEADER = "X-Require2FA-Event"
DELIVERY_HEADER = "X-Require2FA-Delivery"
MAX_BODY = 64 * 1024  # an audit entry is far smaller; a bigger body is refused, never sent cut
RESOLVE_TIMEOUT = 5.0


class Invalid(errors.Invalid):
    """A subscription the rules refuse; `field` names the input, `str()` is the sentence."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("webhook-invalid", message, field=field, summary=message)


class BlockedAddress(OSError):
    """A connection to an address webhooks may never reach (loopback, private, link-local,
    multicast, reserved) outside development."""


# --- Addresses and URLs ---------------------------------------------------------------------


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


def check_events(events: Sequence[str]) -> list[str]:
    """`["*"]` or distinct audit event names (`db.audit.EVENTS`), in a stable order."""
    wanted = list(dict.fromkeys(events))
    if not wanted:
        raise Invalid("events", 'Choose at least one event, or "*" for every event.')
    if ALL_EVENTS in wanted:
        if len(wanted) > 1:
            raise Invalid("events", '"*" already means every event; give it alone.')
        return [ALL_EVENTS]
    if len(wanted) > MAX_EVENTS:
        raise Invalid("events", f"At most {MAX_EVENTS} events.")
    unknown = [event for event in wanted if event not in audit.EVENTS]
    if unknown:
        raise Invalid("events", f"Unknown event: {unknown[0][:100]}")
    return sorted(wanted)


# --- The secret and the signature -----------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _fernet(secret_key: str) -> Fernet:
    return Fernet(fernet_key(secret_key, SECRET_PURPOSE))


def encrypt_secret(secret: str, secret_key: str) -> bytes:
    return _fernet(secret_key).encrypt(secret.encode())


def decrypt_secret(stored: bytes, secret_key: str) -> str | None:
    """The secret, or None when it was encrypted under another SECRET_KEY."""
    try:
        return _fernet(secret_key).decrypt(bytes(stored)).decode()
    except InvalidToken:
        return None


def signature(body: bytes, secret: str) -> str:
    """The `X-Require2FA-Signature` value: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- The body -------------------------------------------------------------------------------


def payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """`{id, event, organization, actor, targetUser, targetMember, data, dateCreated}` of one
    audit entry (the fields the audit-log API shows, but the IP address). `row` has the entry's
    columns and `org_slug`, `actor_email`, `actor_name`."""
    data = row["data"]
    if isinstance(data, str):
        data = json.loads(data)
    return {
        "id": str(row["audit_id"]),
        "event": row["event"],
        "organization": {"id": str(row["organization_id"]), "slug": row["org_slug"]},
        "actor": audit_log.actor_json(row),
        "targetUser": audit_log.target_user_json(row, data),
        "targetMember": (
            str(row["target_member_id"]) if row["target_member_id"] is not None else None
        ),
        "data": data,
        "dateCreated": row["created_at"].isoformat(),
    }


def body(row: Mapping[str, Any]) -> bytes:
    return json.dumps(payload(row), separators=(",", ":"), ensure_ascii=False).encode()


# --- Use cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    webhook: asyncpg.Record
    secret: str  # shown once


async def create(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    url: str,
    events: Iterable[str],
    actor: Actor,
    settings: Settings,
) -> Created:
    """Subscribes `url` to `events` and writes `webhook.create`, in the caller's transaction.
    Raises `Invalid` for a URL or events the rules refuse (call `check_destination` before
    opening the transaction: it may wait on DNS)."""
    url = check_url(url, settings)
    wanted = check_events(list(events))
    secret = new_secret()
    webhook = await queries.insert(
        conn,
        organization_id=organization_id,
        url=url,
        events=wanted,
        secret_encrypted=encrypt_secret(secret, settings.secret_key),
        created_by=actor.user_id,
    )
    await audit.record(
        conn,
        organization_id=organization_id,
        event="webhook.create",
        actor=actor,
        data={"id": str(webhook["id"]), "url": url, "events": wanted},
    )
    return Created(webhook=webhook, secret=secret)


async def delete(
    conn: asyncpg.Connection, *, organization_id: int, webhook_id: int, actor: Actor
) -> bool:
    """Deletes the webhook with its deliveries (those not sent yet are never sent) and writes
    `webhook.delete`; False when the organization has no such webhook."""
    webhook = await queries.delete(conn, organization_id=organization_id, webhook_id=webhook_id)
    if webhook is None:
        return False
    await audit.record(
        conn,
        organization_id=organization_id,
        event="webhook.delete",
        actor=actor,
        data={"id": str(webhook["id"]), "url": webhook["url"]},
    )
    return True


NOT_FOUND = "The requested webhook does not exist."


async def subscribe(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    organization_id: int,
    url: str,
    events: Iterable[str],
    actor: Actor,
) -> Created:
    """`create` with the URL checked (and, outside development, resolved) before its
    transaction; `Invalid` for a URL or events the rules refuse."""
    checked = check_url(url, settings)
    await check_destination(checked, settings)
    async with pool.acquire() as conn, conn.transaction():
        return await create(
            conn,
            organization_id=organization_id,
            url=checked,
            events=events,
            actor=actor,
            settings=settings,
        )


async def unsubscribe(
    pool: asyncpg.Pool, *, organization_id: int, webhook_id: int, actor: Actor
) -> None:
    """`delete` in a transaction of its own; `NotFound` when there is no such webhook."""
    async with pool.acquire() as conn, conn.transaction():
        deleted = await delete(
            conn, organization_id=organization_id, webhook_id=webhook_id, actor=actor
        )
    if not deleted:
        raise errors.NotFound("webhook-not-found", NOT_FOUND)


async def get(pool: asyncpg.Pool, *, organization_id: int, webhook_id: int) -> asyncpg.Record:
    """One of the organization's webhooks; `NotFound`."""
    async with pool.acquire() as conn:
        row = await queries.get(conn, organization_id=organization_id, webhook_id=webhook_id)
    if row is None:
        raise errors.NotFound("webhook-not-found", NOT_FOUND)
    return row


async def listed(pool: asyncpg.Pool, organization_id: int) -> list[asyncpg.Record]:
    """The organization's webhooks."""
    async with pool.acquire() as conn:
        return await queries.list_for(conn, organization_id)


async def deliveries(
    pool: asyncpg.Pool, webhook_id: int, *, before_id: int | None, limit: int
) -> list[asyncpg.Record]:
    """A page of the webhook's deliveries, newest first."""
    async with pool.acquire() as conn:
        return await queries.deliveries_page(conn, webhook_id, before_id=before_id, limit=limit)
