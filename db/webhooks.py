"""Webhook subscriptions and their deliveries (the webhook outbox).

Delivery rows are written by the `audit_log_webhook_deliveries` trigger (migration 0160) in the
transaction of each audit entry, one per matching webhook; `jobs.webhooks` claims due rows,
posts them and records delivered / retry later / failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import asyncpg

from db import claims

# --- Subscriptions --------------------------------------------------------------------------


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
           returning id, organization_id, url, events, created_by, created_at""",
        organization_id,
        url,
        events,
        secret_encrypted,
        created_by,
    )


async def list_for(conn: asyncpg.Connection, organization_id: int) -> list[asyncpg.Record]:
    """The organization's webhooks, oldest first, without their secrets."""
    return await conn.fetch(
        """select id, organization_id, url, events, created_by, created_at from webhooks
           where organization_id = $1 order by id""",
        organization_id,
    )


async def get(
    conn: asyncpg.Connection, *, organization_id: int, webhook_id: int
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """select id, organization_id, url, events, created_by, created_at from webhooks
           where organization_id = $1 and id = $2""",
        organization_id,
        webhook_id,
    )


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
# Claimed under a lease, put back when it lapses (`db.claims`).
_QUEUE = claims.Queue("webhook_deliveries")

# Retrying stops this long after the event; the row is then marked failed.
GIVE_UP_AFTER = timedelta(days=1)


async def claim(conn: asyncpg.Connection, *, limit: int, lease: timedelta) -> list[asyncpg.Record]:
    """Takes up to `limit` due rows until `lease` runs out (counting an attempt) and returns
    each with what its request needs: the webhook's URL and encrypted secret, and the audit
    entry. Rows another transaction is claiming are skipped."""
    return await conn.fetch(
        _QUEUE.claimed_sql()
        + """
            select c.id, c.webhook_id, c.attempts, w.url, w.secret_encrypted,
                   l.id as audit_id, l.organization_id, l.event, l.actor_user_id,
                   l.actor_token_id, l.actor_label, l.target_member_id, l.target_user_id,
                   l.data, l.created_at, o.slug as org_slug,
                   u.email as actor_email, u.name as actor_name
              from claimed c
              join webhooks w on w.id = c.webhook_id
              join audit_log l on l.id = c.audit_log_id
              left join organizations o on o.id = l.organization_id
              left join users u on u.id = l.actor_user_id
             order by c.id""",
        limit,
        lease,
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
any_due = _QUEUE.any_due
next_due_at = _QUEUE.next_due_at
