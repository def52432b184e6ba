"""Enforcement on a date (queue `enforcement`): the clock sends `enforcement.scheduled` every
minute. A thin shim over `require2fa.scheduling.tick`, idempotent by construction."""

from __future__ import annotations

import dramatiq
import structlog

from jobs.resources import current
from jobs.retry import NO_RETRY
from require2fa import scheduling

log = structlog.get_logger(__name__)


@dramatiq.actor(
    actor_name="enforcement.scheduled",
    queue_name="enforcement",
    **NO_RETRY,  # the clock sends the next one within a minute
    time_limit=30 * 60 * 1000,
)
async def scheduled() -> None:
    """Starts the scheduled runs whose time has come (requirement on, run `queued`) and queues
    the countdown reminders due (outbox). Their commits wake the coordinator and the email
    dispatcher (`jobs.wakeup`)."""
    resources = current()
    async with resources.pool.acquire() as conn:
        result = await scheduling.tick(conn, base_url=resources.settings.base_url)
    for run_id in result.started:
        log.info("enforcement.scheduled_run_started", run_id=run_id)
    if result.reminders:
        log.info("enforcement.countdown_queued", emails=result.reminders)
