"""Scheduled upkeep of pending members: purge the expired, remind those about to expire.

Both are idempotent by construction, so two clocks, a double delivery or a crash change nothing:
a batch deletes (or marks) rows and writes what follows from them in one transaction, and only
for rows it actually changed; `for update skip locked` keeps two runs off each other's rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from db import outbox
from db.audit import SYSTEM
from require2fa import email_contexts, links
from require2fa.security import new_token, token_hash

PURGE_BATCH = 2_000
REMINDER_BATCH = 500
REMIND_BEFORE = timedelta(days=7)
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
insert into audit_log (organization_id, event, actor_label, target_member_id, data)
select organization_id, 'member.remove', $3, id,
       jsonb_build_object('reason', $4::text, 'email', email, 'role', role,
                          'reinstate_by', reinstate_by)
from gone
"""


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


# Members due for the "expires soon" email, locked, with their organization and the newest link
# we emailed them (removal or resend; the token is stored hashed, so the link is only there,
# sealed: `require2fa.email_contexts.SEALED_LINK`).
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
  and m.reinstate_by > $1 and m.reinstate_by <= $1 + $2::interval
order by m.reinstate_by
limit $3
for update of m skip locked
"""


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
    (dedupe key `expiry:{member_id}:{reinstate_by}`), however often it runs."""
    queued = seen = 0
    while True:
        async with conn.transaction():
            as_of = now or await conn.fetchval("select now()")
            rows = await conn.fetch(_DUE_SQL, as_of, REMIND_BEFORE, batch_size)
            if not rows:
                break
            seen += len(rows)
            current = await _links(conn, base_url, secret_key, rows)
            records = [_reminder(row, current[row["id"]]) for row in rows]
            inserted = await conn.fetchval(
                """with added as (
                       insert into email_outbox (template, to_address, context, dedupe_key,
                                                 message_id, organization_id, member_id)
                       select * from unnest($1::text[], $2::text[], $3::jsonb[], $4::text[],
                                            $5::text[], $6::bigint[], $7::bigint[])
                       on conflict (dedupe_key) do nothing
                       returning 1)
                   select count(*) from added""",
                *(list(column) for column in zip(*records, strict=True)),
            )
            await conn.execute(
                "update members set expiry_reminded_at = now() where id = any($1::bigint[])",
                [row["id"] for row in rows],
            )
            queued += inserted
    return ReminderResult(queued=queued, members=seen)


def _reminder(row: asyncpg.Record, sealed_accept_url: str) -> tuple[Any, ...]:
    """One `expiry_soon` outbox row, in the column order of the insert above."""
    dedupe_key = f"expiry:{row['id']}:{row['reinstate_by'].isoformat()}"
    context = email_contexts.expiry_soon(
        org_name=row["org_name"],
        org_slug=row["org_slug"],
        sealed_accept_url=sealed_accept_url,
        reinstate_by=row["reinstate_by"],
    )
    return (
        "expiry_soon",
        row["email"],
        context,
        dedupe_key,
        outbox.message_id(dedupe_key),
        row["organization_id"],
        row["id"],
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
        await conn.execute(
            """update members m set token_hash = t.hash
               from unnest($1::bigint[], $2::bytea[]) as t(id, hash) where m.id = t.id""",
            missing,
            [token_hash(tokens[member_id]) for member_id in missing],
        )
        for member_id, token in tokens.items():
            found[member_id] = email_contexts.seal_link(
                secret_key, links.accept_url(base_url, member_id, token)
            )
    return found
