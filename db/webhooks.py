"""Webhook subscriptions and their deliveries (the webhook outbox).

Delivery rows are written by the `audit_log_webhook_deliveries` trigger (migration 0160) in the
transaction of each audit entry, one per matching webhook; `jobs.webhooks` claims due rows,
posts them and records delivered / retry later / failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from db import claims

# --- Subscriptions --------------------------------------------------------------------------

# Serializes the creations of one organization's webhooks (with the organization's id), so that
# the count that the cap checks cannot change under it.
CREATE_LOCK = 0x7232_6677  # "r2fw"


async def count_locked(conn: asyncpg.Connection, organization_id: int) -> int:
    """The organization's webhooks, counted under a lock held until the transaction ends."""
    await conn.execute("select pg_advisory_xact_lock($1, $2)", CREATE_LOCK, organization_id % 2**31)
    return int(
        await conn.fetchval(
            "select count(*) from webhooks where organization_id = $1", organization_id
        )
    )


async def insert(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    url: str,
    events: list[str],
    secret_encrypted: bytes,
    created_by: int | None,
) -> asyncpg.Record:
    return await conn.fetchrow(
        """insert into webhooks (organization_id, url, events, secret_encrypted, created_by)
           values ($1, $2, $3, $4, $5)
           returning id, organization_id, url, events, active, created_by, created_at""",
        organization_id,
        url,
        events,
        secret_encrypted,
        created_by,
    )


async def list_for(conn: asyncpg.Connection, organization_id: int) -> list[asyncpg.Record]:
    """The organization's webhooks, oldest first, without their secrets."""
    return await conn.fetch(
        """select id, organization_id, url, events, active, created_by, created_at from webhooks
           where organization_id = $1 order by id""",
        organization_id,
    )


async def get(
    conn: asyncpg.Connection, *, organization_id: int, webhook_id: int
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """select id, organization_id, url, events, active, created_by, created_at from webhooks
           where organization_id = $1 and id = $2""",
        organization_id,
        webhook_id,
    )


async def update(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    webhook_id: int,
    url: str | None,
    events: list[str] | None,
    active: bool | None,
) -> asyncpg.Record | None:
    """Sets what is given (None keeps the value); returns the webhook as it is now."""
    return await conn.fetchrow(
        """update webhooks set url = coalesce($3, url), events = coalesce($4, events),
                  active = coalesce($5, active)
            where organization_id = $1 and id = $2
        returning id, organization_id, url, events, active, created_by, created_at""",
        organization_id,
        webhook_id,
        url,
        events,
        active,
    )


async def rotate_secret(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    webhook_id: int,
    secret_encrypted: bytes,
    overlap: timedelta,
) -> asyncpg.Record | None:
    """The new secret signs from now on; the one it replaces signs too for `overlap`."""
    return await conn.fetchrow(
        """update webhooks set previous_secret_encrypted = secret_encrypted,
                  previous_secret_until = now() + $4::interval, secret_encrypted = $3
            where organization_id = $1 and id = $2
        returning id, organization_id, url, events, active""",
        organization_id,
        webhook_id,
        secret_encrypted,
        overlap,
    )


async def disable(conn: asyncpg.Connection, webhook_ids: Sequence[int]) -> list[asyncpg.Record]:
    """Turns off those of the webhooks that are on; returns them."""
    return await conn.fetch(
        """update webhooks set active = false where id = any($1::bigint[]) and active
        returning id, organization_id, url""",
        list(webhook_ids),
    )


async def fail_pending(conn: asyncpg.Connection, webhook_ids: Sequence[int], error: str) -> int:
    """Marks the webhooks' deliveries not yet delivered failed (a claim held elsewhere then
    records nothing: its rows are no longer `sending`)."""
    result = await conn.execute(
        """update webhook_deliveries set status = 'failed', claimed_until = null, last_error = $2
            where webhook_id = any($1::bigint[]) and status in ('queued', 'sending')""",
        list(webhook_ids),
        error,
    )
    return int(result.split()[-1])


async def delete(
    conn: asyncpg.Connection, *, organization_id: int, webhook_id: int
) -> asyncpg.Record | None:
    """Deletes the webhook and (cascade) its deliveries; returns what was deleted."""
    return await conn.fetchrow(
        """delete from webhooks where organization_id = $1 and id = $2
           returning id, organization_id, url, events""",
        organization_id,
        webhook_id,
    )


async def insert_ping(conn: asyncpg.Connection, webhook_id: int) -> int:
    """Queues a `ping` delivery (of no audit entry) and wakes the dispatchers at commit."""
    delivery_id = await conn.fetchval(
        """insert into webhook_deliveries (webhook_id, audit_log_id, event)
           values ($1, null, 'ping') returning id""",
        webhook_id,
    )
    await conn.execute("select pg_notify('webhook_deliveries', '')")
    return int(delivery_id)


async def redeliver(conn: asyncpg.Connection, *, webhook_id: int, delivery_id: int) -> bool:
    """Queues the delivery again, due now, with its id (a row in flight is left to its claim);
    wakes the dispatchers at commit. False when the webhook has no such delivery."""
    status = await conn.fetchval(
        """with found as (select id, status from webhook_deliveries
                           where webhook_id = $1 and id = $2 for update),
                requeued as (
                    update webhook_deliveries d
                       set status = 'queued', next_attempt_at = now(), claimed_until = null
                      from found where d.id = found.id and found.status <> 'sending'
                 returning d.id)
           select status from found""",
        webhook_id,
        delivery_id,
    )
    if status is None:
        return False
    await conn.execute("select pg_notify('webhook_deliveries', '')")
    return True


async def deliveries_page(
    conn: asyncpg.Connection, webhook_id: int, *, before_id: int | None, limit: int
) -> list[asyncpg.Record]:
    """Newest first, keyset on id."""
    return await conn.fetch(
        """select id, event, audit_log_id, status, attempts, last_status, last_body, last_error,
                  created_at, delivered_at, next_attempt_at
           from webhook_deliveries
           where webhook_id = $1 and ($2::bigint is null or id < $2)
           order by id desc limit $3""",
        webhook_id,
        before_id,
        limit,
    )


# --- Delivery -------------------------------------------------------------------------------
#
# Claimed under a lease, put back when it lapses (`db.claims`); the claim itself is this
# module's: a few rows per webhook, so that no webhook's backlog fills a dispatch.
_QUEUE = claims.Queue("webhook_deliveries")

# Retrying stops this long after the event; the row is then marked failed.
GIVE_UP_AFTER = timedelta(days=1)

# One claim at a time across dispatchers: what a webhook has in flight is then exact.
CLAIM_LOCK = 0x7232_6663  # "r2fc"

_DUE = """d.status in ('queued', 'sending') and d.next_attempt_at <= now()
          and (d.claimed_until is null or d.claimed_until < now())"""


async def claim(
    conn: asyncpg.Connection, *, limit: int, lease: timedelta, per_webhook: int = 2
) -> list[asyncpg.Record]:
    """Takes up to `limit` due rows of active webhooks until `lease` runs out (counting an
    attempt), at most `per_webhook` held at once per webhook (those other claims hold included),
    oldest due first across webhooks; returns each with what its request needs: the webhook's
    URL and encrypted secrets, and the audit entry (none for a ping)."""
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", CLAIM_LOCK)
        return await conn.fetch(
            """with held as (
                select webhook_id, count(*) as n from webhook_deliveries
                 where status = 'sending' and claimed_until >= now()
                 group by webhook_id),
            due as (
                select d.id
                  from webhooks w
                  left join held h on h.webhook_id = w.id
                 cross join lateral (
                       select d.id, d.next_attempt_at from webhook_deliveries d
                        where d.webhook_id = w.id and """
            + _DUE
            + """
                        order by d.next_attempt_at, d.id
                        limit greatest(0, $3 - coalesce(h.n, 0))) d
                 where w.active
                 order by d.next_attempt_at, d.id
                 limit $1),
            claimed as (
                update webhook_deliveries t
                   set status = 'sending', claimed_until = now() + $2::interval,
                       attempts = t.attempts + 1
                  from due
                 where t.id = due.id
             returning t.*)
            select c.id, c.webhook_id, c.attempts, w.url, w.secret_encrypted,
                   w.previous_secret_encrypted,
                   w.previous_secret_until > now() as previous_signs,
                   l.id as audit_id, w.organization_id, c.event, l.actor_user_id,
                   l.actor_token_id, l.actor_label, l.target_member_id, l.target_user_id,
                   l.data, coalesce(l.created_at, c.created_at) as created_at,
                   o.slug as org_slug, u.email as actor_email, u.name as actor_name
              from claimed c
              join webhooks w on w.id = c.webhook_id
              left join audit_log l on l.id = c.audit_log_id
              left join organizations o on o.id = w.organization_id
              left join users u on u.id = l.actor_user_id
             order by c.id""",
            limit,
            lease,
            per_webhook,
        )


async def any_due(conn: asyncpg.Connection) -> bool:
    """Whether a row of an active webhook is waiting to be claimed now."""
    return bool(
        await conn.fetchval(
            """select exists (select 1 from webhook_deliveries d
                                join webhooks w on w.id = d.webhook_id and w.active
                               where """
            + _DUE
            + ")"
        )
    )


async def next_due_at(conn: asyncpg.Connection) -> datetime | None:
    """When the earliest queued row of an active webhook (a retry) is due."""
    return await conn.fetchval(
        """select min(d.next_attempt_at) from webhook_deliveries d
             join webhooks w on w.id = d.webhook_id and w.active
            where d.status = 'queued'"""
    )


# (id, attempts, http status or None, first bytes of the answer or None)
Answer = tuple[int, int, int | None, str | None]


async def mark_delivered(conn: asyncpg.Connection, rows: Sequence[Answer]) -> int:
    """The receiver answered 2xx. Only rows still held by that claim (same attempts) change."""
    if not rows:
        return 0
    ids, attempts, statuses, bodies = zip(*rows, strict=True)
    result = await conn.execute(
        """update webhook_deliveries d
              set status = 'delivered', delivered_at = now(), claimed_until = null,
                  last_status = r.status, last_body = r.body, last_error = null
             from unnest($1::bigint[], $2::int[], $3::int[], $4::text[])
                  as r(id, attempts, status, body)
            where d.id = r.id and d.attempts = r.attempts and d.status = 'sending'""",
        list(ids),
        list(attempts),
        list(statuses),
        list(bodies),
    )
    return int(result.split()[-1])


async def mark_retry(
    conn: asyncpg.Connection, rows: Sequence[tuple[int, int, int | None, str | None, float, str]]
) -> int:
    """(id, attempts, status, body, delay seconds, error) rows go back in the queue for a later
    attempt; a row older than `GIVE_UP_AFTER` is marked failed instead, keeping the last answer."""
    if not rows:
        return 0
    ids, attempts, statuses, bodies, delays, errors = zip(*rows, strict=True)
    result = await conn.execute(
        """update webhook_deliveries d
              set status = case when now() - d.created_at >= $7::interval
                                then 'failed' else 'queued' end,
                  next_attempt_at = now() + make_interval(secs => r.delay),
                  claimed_until = null, last_status = r.status, last_body = r.body,
                  last_error = case when now() - d.created_at >= $7::interval
                                    then 'gave up after ' || d.attempts || ' attempts: ' || r.error
                                    else r.error end
             from unnest($1::bigint[], $2::int[], $3::int[], $4::text[], $5::float8[], $6::text[])
                  as r(id, attempts, status, body, delay, error)
            where d.id = r.id and d.attempts = r.attempts and d.status = 'sending'""",
        list(ids),
        list(attempts),
        list(statuses),
        list(bodies),
        list(delays),
        list(errors),
        GIVE_UP_AFTER,
    )
    return int(result.split()[-1])


async def mark_failed(
    conn: asyncpg.Connection, rows: Sequence[tuple[int, int, int | None, str | None, str]]
) -> int:
    """(id, attempts, status, body, error) rows will never be delivered."""
    if not rows:
        return 0
    ids, attempts, statuses, bodies, errors = zip(*rows, strict=True)
    result = await conn.execute(
        """update webhook_deliveries d
              set status = 'failed', claimed_until = null, last_status = r.status,
                  last_body = r.body, last_error = r.error
             from unnest($1::bigint[], $2::int[], $3::int[], $4::text[], $5::text[])
                  as r(id, attempts, status, body, error)
            where d.id = r.id and d.attempts = r.attempts and d.status = 'sending'""",
        list(ids),
        list(attempts),
        list(statuses),
        list(bodies),
        list(errors),
    )
    return int(result.split()[-1])


release_lapsed = _QUEUE.release_lapsed
