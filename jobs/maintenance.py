"""Daily upkeep that the clock schedules: purge expired pending members, send expiry reminders.

Thin shims over `db.maintenance`, which is idempotent by construction: a second delivery, a
second clock or a retry after a crash finds nothing left to do.
"""

from __future__ import annotations

import dramatiq
import structlog

from db import maintenance
from jobs import email as email_jobs
from jobs.resources import current
from jobs.retry import retry_options

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
        result = await maintenance.expiry_reminders(
            conn, resources.settings.base_url, secret_key=resources.settings.secret_key
        )
    log.info("queued expiry reminders", queued=result.queued, members=result.members)
    if result.queued:
        await email_jobs.kick()
