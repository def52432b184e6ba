"""Reading an organization's audit log (CONTRACT §8): newest first, one event or all."""

from __future__ import annotations

import asyncpg

from db import audit
from require2fa.errors import Invalid

EVENTS = audit.EVENTS


async def page(
    pool: asyncpg.Pool, org_id: int, *, event: str | None, before_id: int | None, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` entries before `before_id`, newest first, of `event` when given; `Invalid`
    (on `event`) for an event that does not exist."""
    if event is not None and event not in audit.EVENTS:
        unknown = f"Unknown event: {event[:100]}"
        raise Invalid("unknown-event", unknown, field="event", summary=unknown)
    async with pool.acquire() as conn:
        return await audit.page(
            conn, organization_id=org_id, event=event, before_id=before_id, limit=limit
        )
