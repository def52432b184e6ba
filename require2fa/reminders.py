"""Reminding the members who do not meet the requirement yet: "{org} will require two-factor
authentication". At most one per member per day, each recorded on the member
(`last_reminded_at`). The API's `2fa-reminders` (through `enforcement.queue_reminders`), the
settings page and `require2fa remind` all come here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from db import reminders
from require2fa import email_contexts


@dataclass(frozen=True)
class Reminded:
    members: int  # members without a second factor that were looked at
    queued: int  # reminders queued now (the rest had theirs today already)


async def remind(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    base_url: str,
    day: str,
    except_user_id: int | None = None,
    on_chunk: Callable[[reminders.Chunk], Any] | None = None,
) -> Reminded:
    """Queues today's reminder to every active member without a second factor (but
    `except_user_id`, the owner asking), chunk by chunk, each chunk its own transaction; a second
    call on the same `day` queues nothing new. Kicking the email dispatcher is the caller's.
    Call outside a transaction: each chunk commits on its own."""
    org = await conn.fetchrow(
        "select id, name, slug from organizations where id = $1", organization_id
    )
    if org is None:
        return Reminded(0, 0)
    context = email_contexts.reminder_2fa(
        base_url=base_url, org_name=org["name"], org_slug=org["slug"]
    )
    prefix, suffix = reminders.reminder_key(organization_id, day)
    after: int | None = None
    members = queued = 0
    while True:
        async with conn.transaction():
            chunk = await reminders.queue_chunk(
                conn,
                organization_id=organization_id,
                template="reminder_2fa",
                context=context,
                key_prefix=prefix,
                key_suffix=suffix,
                except_user_id=except_user_id,
                after_id=after,
            )
        if chunk.last_id is None:
            break
        members += chunk.seen
        queued += chunk.queued
        after = chunk.last_id
        if on_chunk is not None:
            on_chunk(chunk)
    return Reminded(members=members, queued=queued)
