"""Writing to the email outbox. Rows are written in the caller's transaction (the event's)."""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg

TEMPLATES = (
    "removed_for_2fa",
    "invite",
    "reminder_2fa",
    "expiry_soon",
    "security_notice",
)


def message_id(dedupe_key: str, domain: str = "require2fa") -> str:
    """A Message-ID that is the same for every attempt at the same event's email."""
    digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


async def enqueue(
    conn: asyncpg.Connection,
    *,
    template: str,
    to: str,
    context: dict[str, Any],
    dedupe_key: str,
    organization_id: int | None = None,
    member_id: int | None = None,
    enforcement_id: int | None = None,
) -> int | None:
    """Queue one email; a second call with the same `dedupe_key` queues nothing (returns None)."""
    assert template in TEMPLATES, template
    return await conn.fetchval(
        """insert into email_outbox (template, to_address, context, dedupe_key, message_id,
                                     organization_id, member_id, enforcement_id)
           values ($1, $2, $3, $4, $5, $6, $7, $8)
           on conflict (dedupe_key) do nothing
           returning id""",
        template,
        to,
        context,
        dedupe_key,
        message_id(dedupe_key),
        organization_id,
        member_id,
        enforcement_id,
    )
