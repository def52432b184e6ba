"""Scheduled upkeep of pending members: purge the expired; the statements of the reminder to
those about to expire (what it says is `require2fa.expiry`'s).

Both are idempotent by construction, so two clocks, a double delivery or a crash change nothing:
a batch deletes (or marks) rows and writes what follows from them in one transaction, and only
for rows it actually changed; `for update skip locked` keeps two runs off each other's rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from db import audit
from db.audit import SYSTEM

PURGE_BATCH = 2_000
PURGE_REASON = "2fa-window-expired"

# One batch of the purge: the due rows (soonest first, on members_pending_2fa), deleted with
# their team links (by cascade), a tombstone for each link and one `member.remove` audit entry
# each. The audit log keeps the member's earlier history: it has no foreign keys.
_PURGE_BATCH_SQL = """
with doomed as (
    select id from members
    where pending_reason = '2fa' and reinstate_by <= coalesce($1::timestamptz, now())
    order by reinstate_by
    limit $2
    for update skip locked
), gone as (
    -- By primary key: a join here may be planned as a scan of every member, once per batch.
    delete from members m where m.id = any(array(select id from doomed))
    returning m.id, m.organization_id, m.email, m.role, m.token_hash, m.reinstate_by
), tombstones as (
    insert into purged_members (member_id, organization_id, token_hash, reinstate_by)
    select id, organization_id, token_hash, reinstate_by from gone
    on conflict (member_id) do nothing
)
""" + audit.insert_sql(
    """select organization_id, 'member.remove', null, null, $3, id, null, null,
              jsonb_build_object('reason', $4::text, 'email', email, 'role', role,
                                 'reinstate_by', reinstate_by),
              now()
       from gone"""
)


@dataclass(frozen=True)
class PurgeResult:
    purged: int
    batches: int
    seconds: float


async def purge_expired(
    conn: asyncpg.Connection,
    *,
    as_of: datetime | None = None,
    batch_size: int = PURGE_BATCH,
    on_batch: Callable[[int], Any] | None = None,
) -> PurgeResult:
    """Deletes pending members removed for 2FA whose `reinstate_by` has passed (as of the
    database's clock, or `as_of`), in batches of one short transaction each so that the API stays
    responsive; writes `member.remove` (reason `2fa-window-expired`) and a tombstone per member."""
    started = time.perf_counter()
    purged = batches = 0
    while True:
        async with conn.transaction():
            status = await conn.execute(
                _PURGE_BATCH_SQL, as_of, batch_size, SYSTEM.label, PURGE_REASON
            )
        count = int(status.rsplit(" ", 1)[1])
        if count == 0:
            break
        purged += count
        batches += 1
        if on_batch is not None:
            on_batch(count)
    return PurgeResult(purged=purged, batches=batches, seconds=time.perf_counter() - started)


async def purged_link(conn: asyncpg.Connection, member_id: int) -> asyncpg.Record | None:
    """The tombstone of a purged member, if that member was purged."""
    return await conn.fetchrow("select * from purged_members where member_id = $1", member_id)


# Members due for the "expires soon" email (their window ends within `$2` of `$1`, the
# database's clock when null), locked, with their organization and the newest link we emailed
# them (removal or resend; the token is stored hashed, so the link is only there, sealed:
# `require2fa.email_contexts.SEALED_LINK`).
_DUE_SQL = """
select m.id, m.organization_id, m.email, m.reinstate_by, o.name as org_name, o.slug as org_slug,
       link.sealed_accept_url
from members m
join organizations o on o.id = m.organization_id
left join lateral (
    select e.context->>'accept_url_sealed' as sealed_accept_url from email_outbox e
    where e.member_id = m.id and e.template in ('removed_for_2fa', 'invite')
      and e.context ? 'accept_url_sealed'
    order by e.id desc limit 1
) link on true
where m.pending_reason = '2fa' and m.expiry_reminded_at is null
  and m.reinstate_by > coalesce($1::timestamptz, now())
  and m.reinstate_by <= coalesce($1::timestamptz, now()) + $2::interval
order by m.reinstate_by
limit $3
for update of m skip locked
"""


async def due_for_expiry(
    conn: asyncpg.Connection, *, before: timedelta, as_of: datetime | None, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` pending members whose window ends within `before` (from `as_of`, or the
    database's clock) and who have not been reminded, soonest first, locked (others' skipped),
    each with its organization's name and slug and its newest sealed link (or None)."""
    return await conn.fetch(_DUE_SQL, as_of, before, limit)


async def replace_tokens(
    conn: asyncpg.Connection, member_ids: Sequence[int], token_hashes: Sequence[bytes]
) -> None:
    """New link tokens (hashes) for these members: their old links stop working."""
    await conn.execute(
        """update members m set token_hash = t.hash
           from unnest($1::bigint[], $2::bytea[]) as t(id, hash) where m.id = t.id""",
        list(member_ids),
        list(token_hashes),
    )


async def mark_expiry_reminded(conn: asyncpg.Connection, member_ids: Sequence[int]) -> None:
    await conn.execute(
        "update members set expiry_reminded_at = now() where id = any($1::bigint[])",
        list(member_ids),
    )
