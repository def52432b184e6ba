"""Reminder emails to the members who do not meet the requirement yet, queued chunk by chunk.

One statement per chunk of members (keyset on `members_org_id`): it picks the chunk's active
members who do not meet the requirement (no second factor that the organization's level
accepts, no exemption), writes one outbox
row each (the dedupe key makes a second attempt queue nothing) and stamps `last_reminded_at` on
the members it queued for, in one transaction. Memory and transaction length do not grow with
the organization, and a caller can show progress between chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from db import outbox
from db.counts import NONCOMPLIANT_SQL
from require2fa import compliance

CHUNK = 1000

# The dedupe key of member `m`: `$key_prefix || m.id || $key_suffix`.
_KEY = "$3::text || m.id || $4::text"

# One outbox row per member of the chunk (`db.outbox.COLUMNS`).
_ROWS = f"""
select $8::text, m.email, $2::jsonb, {_KEY}, {outbox.MESSAGE_ID_SQL.format(key=_KEY)},
       m.organization_id, m.id, null
from chunk m
order by m.id"""

_CHUNK_SQL = f"""
with chunk as (
    select m.id, m.email, m.organization_id
    from members m join users u on u.id = m.user_id
                   join organizations o on o.id = m.organization_id
    where m.organization_id = $1 and ($6::bigint is null or m.id > $6)
      and u.id is distinct from $5 and {NONCOMPLIANT_SQL}
      and {compliance.in_scope_sql("m.id", "m.role")}
    order by m.id
    limit $7
), queued as (
    {outbox.insert_sql(_ROWS)}
    returning member_id
), stamped as (
    update members set last_reminded_at = now()
    where id in (select member_id from queued)
)
select (select max(id) from chunk) as last_id,
       (select count(*) from chunk) as seen,
       (select count(*) from queued) as queued
"""


@dataclass(frozen=True)
class Chunk:
    last_id: int | None  # the keyset position to go on from; None: nothing was left
    seen: int  # members without a second factor in this chunk
    queued: int  # emails new in this chunk (the others were queued already under that key)


async def queue_chunk(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    template: str,
    context: dict[str, Any],
    key_prefix: str,
    key_suffix: str = "",
    except_user_id: int | None = None,
    after_id: int | None = None,
    limit: int = CHUNK,
) -> Chunk:
    """Queues `template` (the same `context` for all) to the next `limit` active members after
    `after_id` who have no second factor, but `except_user_id`; stamps `last_reminded_at` on
    those queued now. Run it in a transaction of its own."""
    row = await conn.fetchrow(
        _CHUNK_SQL,
        organization_id,
        context,
        key_prefix,
        key_suffix,
        except_user_id,
        after_id,
        limit,
        template,
    )
    assert row is not None
    return Chunk(last_id=row["last_id"], seen=row["seen"], queued=row["queued"])


def reminder_key(organization_id: int, day: str) -> tuple[str, str]:
    """(prefix, suffix) of the "will require" reminder's dedupe key: once per member per day."""
    return f"reminder:{organization_id}:", f":{day}"
