"""Reading an organization's audit log (`db.audit.EVENTS`): newest first, one event or all."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


# --- An entry as JSON (the audit-log API and the webhooks' bodies) ---------------------------


def actor_json(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """`{type, id, email, name, tokenId}` of the entry's actor (a user, or the system under a
    label), or None. `row` has the entry's columns and `actor_email`, `actor_name`."""
    if row["actor_user_id"] is None and not row["actor_label"]:
        return None
    return {
        "type": "user" if row["actor_user_id"] is not None else "system",
        "id": str(row["actor_user_id"]) if row["actor_user_id"] is not None else None,
        "email": row["actor_email"],
        "name": row["actor_name"] or row["actor_label"],
        "tokenId": str(row["actor_token_id"]) if row["actor_token_id"] is not None else None,
    }


def target_user_json(row: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any] | None:
    """`{id, email}` of the entry's target user (the email as the entry's data recorded it)."""
    if row["target_user_id"] is None:
        return None
    return {"id": str(row["target_user_id"]), "email": data.get("email")}
