"""The "Your access to {org} expires soon" email to pending members whose reinstatement window
ends within seven days: once per member and window, however often the clock runs it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from db import maintenance, outbox
from require2fa import email_contexts, links
from require2fa.security import new_token, token_hash

REMINDER_BATCH = 500
REMIND_BEFORE = timedelta(days=7)


@dataclass(frozen=True)
class ReminderResult:
    queued: int
    members: int


async def expiry_reminders(
    conn: asyncpg.Connection,
    base_url: str,
    *,
    secret_key: str,
    now: datetime | None = None,
    batch_size: int = REMINDER_BATCH,
) -> ReminderResult:
    """Queues one `expiry_soon` email per pending member whose window ends within seven days and
    marks `expiry_reminded_at`, in the same transaction: once per member and `reinstate_by`
    (dedupe key `expiry:{member_id}:{reinstate_by}`), however often it runs. A member whose
    last link is no longer on record gets a fresh one (its token replaced)."""
    queued = seen = 0
    while True:
        async with conn.transaction():
            rows = await maintenance.due_for_expiry(
                conn, before=REMIND_BEFORE, as_of=now, limit=batch_size
            )
            if not rows:
                break
            seen += len(rows)
            current = await _links(conn, base_url, secret_key, rows)
            queued += await outbox.enqueue_many(
                conn, [_reminder(row, current[row["id"]]) for row in rows]
            )
            await maintenance.mark_expiry_reminded(conn, [row["id"] for row in rows])
    return ReminderResult(queued=queued, members=seen)


def _reminder(row: asyncpg.Record, sealed_accept_url: str) -> outbox.Email:
    dedupe_key = f"expiry:{row['id']}:{row['reinstate_by'].isoformat()}"
    return outbox.Email(
        template="expiry_soon",
        to=row["email"],
        context=email_contexts.expiry_soon(
            org_name=row["org_name"],
            org_slug=row["org_slug"],
            sealed_accept_url=sealed_accept_url,
            reinstate_by=row["reinstate_by"],
        ),
        dedupe_key=dedupe_key,
        organization_id=row["organization_id"],
        member_id=row["id"],
    )


async def _links(
    conn: asyncpg.Connection, base_url: str, secret_key: str, rows: list[asyncpg.Record]
) -> dict[int, str]:
    """The member's current link, sealed; a member with none on record (its email row was
    cleaned up) gets a fresh token, which replaces the old one: the reminder then carries the
    only link."""
    found = {row["id"]: row["sealed_accept_url"] for row in rows if row["sealed_accept_url"]}
    missing = [row["id"] for row in rows if not row["sealed_accept_url"]]
    if missing:
        tokens = {member_id: new_token() for member_id in missing}
        await maintenance.replace_tokens(
            conn, missing, [token_hash(tokens[member_id]) for member_id in missing]
        )
        for member_id, token in tokens.items():
            found[member_id] = email_contexts.seal_link(
                secret_key, links.accept_url(base_url, member_id, token)
            )
    return found
