"""Upkeep that the clock schedules: purge expired pending members, send expiry reminders
(daily), delete expired sessions and prune what retention lets go (hourly).

Thin shims over `db.maintenance` and `require2fa.expiry`, idempotent by construction: a second
delivery, a second clock or a retry after a crash finds nothing left to do.
"""

from __future__ import annotations

import asyncpg
import dramatiq
import structlog

from db import maintenance, sessions
from jobs.resources import current
from jobs.retry import retry_options
from require2fa import expiry, retention

log = structlog.get_logger(__name__)

QUEUE = "maintenance"


# Passing failures are worth another try; anything else is a bug to look at.
RETRY = retry_options(transient=10, min_backoff=5_000, max_backoff=600_000)


@dramatiq.actor(
    actor_name="maintenance.purge_expired",
    queue_name=QUEUE,
    **RETRY,
    time_limit=6 * 3600 * 1000,  # a million rows take minutes; leave room
)
async def purge_expired() -> None:
    """Deletes expired pending members in batches; writes `member.remove` and tombstones."""
    async with current().pool.acquire() as conn:
        result = await maintenance.purge_expired(conn)
    log.info("purged expired members", purged=result.purged, seconds=round(result.seconds, 1))


@dramatiq.actor(
    actor_name="maintenance.expiry_reminders",
    queue_name=QUEUE,
    **RETRY,
    time_limit=3600 * 1000,
)
async def expiry_reminders() -> None:
    """Queues the `expiry_soon` emails (outbox) due now and marks the members reminded."""
    resources = current()
    async with resources.pool.acquire() as conn:
        result = await expiry.expiry_reminders(
            conn, resources.settings.base_url, secret_key=resources.settings.secret_key
        )
    log.info("queued expiry reminders", queued=result.queued, members=result.members)


SESSION_PURGE_BATCH = 10_000


async def purge_sessions_now(pool: asyncpg.Pool, *, batch_size: int = SESSION_PURGE_BATCH) -> int:
    """Deletes every session row whose time is up (`expires_at` passed), a batch per statement;
    returns how many. Those rows already answer as no session at all; this keeps the table (and
    its data: addresses, user agents) from growing forever."""
    purged = 0
    while True:
        async with pool.acquire() as conn:
            done = await sessions.purge_expired(conn, limit=batch_size)
        purged += done
        if done < batch_size:
            return purged


@dramatiq.actor(
    actor_name="maintenance.purge_sessions",
    queue_name=QUEUE,
    **RETRY,
    time_limit=3600 * 1000,
)
async def purge_sessions() -> None:
    """Deletes expired session rows."""
    purged = await purge_sessions_now(current().pool)
    log.info("purged expired sessions", purged=purged)


@dramatiq.actor(
    actor_name="maintenance.prune",
    queue_name=QUEUE,
    **RETRY,
    time_limit=3600 * 1000,
)
async def prune() -> None:
    """One retention pass (`require2fa.retention.prune`): deletes finished email rows, webhook
    deliveries and expired sessions past retention, creates and drops the audit log's months;
    writes a `maintenance` audit entry."""
    resources = current()
    await retention.prune(
        resources.pool,
        outbox_retention=resources.settings.outbox_retention,
        audit_retention=resources.settings.audit_retention,
    )
