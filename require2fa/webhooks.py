"""Webhooks: the rules of a subscription and of what is sent to it (docs/BEHAVIOUR.md).

- Which URLs may be subscribed and which addresses may ever be connected to:
  `require2fa.webhook_addresses`.
- The secret and the signatures (the first form and Standard Webhooks 1.0, rotation):
  `require2fa.webhook_signatures`.
- At most `MAX_WEBHOOKS` per organization, counted under a lock so that two creations at once
  cannot both pass.
- The body: the audit entry as JSON, built from the entry (which never changes); a `ping` has
  no entry.
- A receiver answering 410 Gone turns its webhook off (`disable_gone`, audited
  `webhook.disable`); an inactive webhook gets no deliveries and its pending ones fail.
- The use cases (create, change, rotate the secret, ping, redeliver, delete), each with its
  audit entry where it changes the subscription, in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from db import audit
from db import webhooks as queries
from db.audit import Actor
from require2fa import audit_log, errors
from require2fa.settings import Settings
from require2fa.webhook_addresses import (
    MAX_URL,
    BlockedAddress,
    Invalid,
    audit_host,
    check_destination,
    check_url,
    forbidden_address,
)
from require2fa.webhook_signatures import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    ROTATION_OVERLAP,
    SIGNATURE_HEADER,
    decrypt_secret,
    encrypt_secret,
    new_secret,
    signature,
)

__all__ = [  # the rules of the two modules beside this one, for the adapters
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "MAX_URL",
    "SIGNATURE_HEADER",
    "BlockedAddress",
    "Invalid",
    "check_destination",
    "check_url",
    "decrypt_secret",
    "encrypt_secret",
    "forbidden_address",
    "new_secret",
    "signature",
]

ALL_EVENTS = "*"
MAX_EVENTS = 100
MAX_WEBHOOKS = 20  # per organization
PING = "ping"
GONE = 410  # a receiver answering this is turned off
MAX_BODY = 64 * 1024  # an audit entry is far smaller; a bigger body is refused, never sent cut
NOT_FOUND = "The requested webhook does not exist."
DELIVERY_NOT_FOUND = "The requested delivery does not exist."
INACTIVE = "The webhook is turned off; turn it on first."
DISABLED_ERROR = "webhook turned off: the receiver answered 410 Gone"
TURNED_OFF_ERROR = "webhook turned off"


# --- Events ---------------------------------------------------------------------------------


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


# --- The body -------------------------------------------------------------------------------


def payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """`{id, event, organization, actor, targetUser, targetMember, data, dateCreated}` of one
    audit entry (the fields the audit-log API shows, but the IP address). `row` has the entry's
    columns and `org_slug`, `actor_email`, `actor_name`; a ping (no entry) has the delivery's id,
    `data: {"webhook": id}` and no actor or targets."""
    if row["audit_id"] is None:
        return {
            "id": str(row["id"]),
            "event": PING,
            "organization": {"id": str(row["organization_id"]), "slug": row["org_slug"]},
            "actor": None,
            "targetUser": None,
            "targetMember": None,
            "data": {"webhook": str(row["webhook_id"])},
            "dateCreated": row["created_at"].isoformat(),
        }
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


def _too_many() -> errors.Conflict:
    return errors.Conflict(
        "webhook-limit",
        f"An organization can have at most {MAX_WEBHOOKS} webhooks; delete one to add another.",
    )


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
    Raises `Invalid` for a URL or events the rules refuse, `Conflict` past `MAX_WEBHOOKS`
    (call `check_destination` before opening the transaction: it may wait on DNS)."""
    url = check_url(url, settings)
    wanted = check_events(list(events))
    if await queries.count_locked(conn, organization_id) >= MAX_WEBHOOKS:
        raise _too_many()
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
        data={"id": str(webhook["id"]), "host": audit_host(url), "events": wanted},
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
        data={"id": str(webhook["id"]), "host": audit_host(webhook["url"])},
    )
    return True


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
    transaction; `Invalid` for a URL or events the rules refuse, `Conflict` past the cap."""
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


async def change(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    organization_id: int,
    webhook_id: int,
    url: str | None,
    events: Sequence[str] | None,
    active: bool | None,
    actor: Actor,
) -> asyncpg.Record:
    """Sets the webhook's URL, events and whether it is on (None keeps each); turning it off
    fails its pending deliveries. Writes `webhook.edit` with what changed (nothing when
    nothing did). `Invalid`, `NotFound`."""
    checked = check_url(url, settings) if url is not None else None
    if checked is not None:
        await check_destination(checked, settings)
    wanted = check_events(list(events)) if events is not None else None
    async with pool.acquire() as conn, conn.transaction():
        before = await queries.get(conn, organization_id=organization_id, webhook_id=webhook_id)
        if before is None:
            raise errors.NotFound("webhook-not-found", NOT_FOUND)
        after = await queries.update(
            conn,
            organization_id=organization_id,
            webhook_id=webhook_id,
            url=checked,
            events=wanted,
            active=active,
        )
        if after is None:  # deleted meanwhile
            raise errors.NotFound("webhook-not-found", NOT_FOUND)
        changed: dict[str, Any] = {
            key: after[key] if key != "events" else list(after[key])
            for key in ("events", "active")
            if after[key] != before[key]
        }
        if after["url"] != before["url"]:
            changed["host"] = audit_host(after["url"])
        if before["active"] and not after["active"]:
            await queries.fail_pending(conn, [webhook_id], TURNED_OFF_ERROR)
        if changed:
            await audit.record(
                conn,
                organization_id=organization_id,
                event="webhook.edit",
                actor=actor,
                data={"id": str(webhook_id), **changed},
            )
    return after


async def rotate_secret(
    pool: asyncpg.Pool, settings: Settings, *, organization_id: int, webhook_id: int, actor: Actor
) -> str:
    """A new secret (returned, shown once); the one it replaces signs beside it for
    `ROTATION_OVERLAP`. Writes `webhook.rotate-secret`. `NotFound`."""
    secret = new_secret()
    async with pool.acquire() as conn, conn.transaction():
        webhook = await queries.rotate_secret(
            conn,
            organization_id=organization_id,
            webhook_id=webhook_id,
            secret_encrypted=encrypt_secret(secret, settings.secret_key),
            overlap=ROTATION_OVERLAP,
        )
        if webhook is None:
            raise errors.NotFound("webhook-not-found", NOT_FOUND)
        await audit.record(
            conn,
            organization_id=organization_id,
            event="webhook.rotate-secret",
            actor=actor,
            data={"id": str(webhook_id), "previousSignsFor": "24h"},
        )
    return secret


async def _active(conn: asyncpg.Connection, organization_id: int, webhook_id: int) -> None:
    webhook = await queries.get(conn, organization_id=organization_id, webhook_id=webhook_id)
    if webhook is None:
        raise errors.NotFound("webhook-not-found", NOT_FOUND)
    if not webhook["active"]:
        raise errors.Conflict("webhook-inactive", INACTIVE)


async def ping(pool: asyncpg.Pool, *, organization_id: int, webhook_id: int) -> int:
    """Queues a `ping` delivery to the webhook; returns its id. `NotFound`, `Conflict` when
    the webhook is off."""
    async with pool.acquire() as conn, conn.transaction():
        await _active(conn, organization_id, webhook_id)
        return await queries.insert_ping(conn, webhook_id)


async def redeliver(
    pool: asyncpg.Pool, *, organization_id: int, webhook_id: int, delivery_id: int
) -> None:
    """Queues one of the webhook's deliveries again, due now, with the same id (a delivery in
    flight is left to it). `NotFound`, `Conflict` when the webhook is off."""
    async with pool.acquire() as conn, conn.transaction():
        await _active(conn, organization_id, webhook_id)
        if not await queries.redeliver(conn, webhook_id=webhook_id, delivery_id=delivery_id):
            raise errors.NotFound("delivery-not-found", DELIVERY_NOT_FOUND)


async def disable_gone(conn: asyncpg.Connection, webhook_ids: Sequence[int]) -> int:
    """The receivers of these webhooks answered 410 Gone: turns them off, fails their pending
    deliveries and writes `webhook.disable` for each one that was on, in the caller's
    transaction; returns how many were turned off."""
    turned_off = await queries.disable(conn, webhook_ids)
    if not turned_off:
        return 0
    await queries.fail_pending(conn, [row["id"] for row in turned_off], DISABLED_ERROR)
    for row in turned_off:
        await audit.record(
            conn,
            organization_id=row["organization_id"],
            event="webhook.disable",
            actor=audit.SYSTEM,
            data={"id": str(row["id"]), "host": audit_host(row["url"]), "reason": "410 Gone"},
        )
    return len(turned_off)


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
