"""Webhook delivery from the webhook outbox (queue `webhooks`).

- `webhooks.dispatch` claims due deliveries under a lease, at most `CONCURRENCY` (2) held at
  once per webhook across dispatchers, oldest due first across webhooks, so that a receiver that
  is slow, failing or unreachable delays only its own deliveries; posts each in its own task
  over one aiohttp session whose connections are reused (a 3 s connect timeout, 10 s in all),
  and records each outcome: 2xx delivered; timeouts, connection errors, 408, 429 and 5xx
  retried with backoff (10 s doubling to an hour) for a day after the event; 410 Gone turns the
  webhook off (`webhook.disable`); any other answer (4xx, a redirect, which is not followed)
  failed at once. It keeps claiming until
  nothing is due or its time budget is spent, then sends itself again. One dispatch at a time
  sends per worker process; a second delivery of the same message finds that one running (or
  nothing due) and sends nothing.
- `webhooks.sweep` puts back deliveries whose claim lapsed (their worker died) and sends a
  dispatch when some are due. The clock runs it every minute.

Deliveries are written by a trigger in the transaction of each audit entry; its `pg_notify`
wakes the dispatchers through `jobs.wakeup` once the transaction commits.

At least once: a worker killed between a 2xx and the record of it sends that delivery again
after its lease lapses, with the same `X-Require2FA-Delivery` / `webhook-id` (at most
`FLUSH_EVERY` plus the rows in flight, `CONCURRENCY` per webhook, can be sent twice that way).

Safety outside development: only `https://` URLs are posted to; every socket is checked, just
before it connects, against `require2fa.webhooks.forbidden_address` (loopback, private,
link-local, multicast …), so a name that resolves to a private address at delivery time, or
rebinds to one, is refused; redirects are not followed; no proxy from the environment is used;
a request takes at most `TIMEOUT` seconds; at most `KEEP_BYTES` of an answer are read.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import dramatiq
import structlog

from db import webhooks as outbox
from jobs import outbox_family, resources
from jobs.webhook_client import CONCURRENCY, client_session
from jobs.webhook_delivery import FLUSH_EVERY, Report, dispatch, sweep
from require2fa.settings import Settings

# What tests and benchmarks take from here, beside the actors.
__all__ = [
    "CONCURRENCY",
    "FLUSH_EVERY",
    "Report",
    "client_session",
    "dispatch",
    "dispatch_job",
    "sweep",
    "sweep_job",
]

log = structlog.get_logger(__name__)

QUEUE = "webhooks"


def _wake_key(settings: Settings) -> str:
    return f"{settings.redis_namespace}:webhooks:wake"


# --- Actors ---------------------------------------------------------------------------------

# One dispatch sends at a time in a worker process (they share its event loop); a second one
# leaves the rows to it. The first looks once more after letting go, so no wake-up is lost.
_sending = False


async def dispatch_once(
    pool: asyncpg.Pool, settings: Settings, **options: Any
) -> tuple[Report | None, bool]:
    """`dispatch` unless this process already runs one; returns (report or None, any due)."""
    global _sending
    if _sending:
        return None, False
    _sending = True
    try:
        report = await dispatch(pool, settings, **options)
    finally:
        _sending = False
    if report.more:
        return report, True
    async with pool.acquire() as conn:
        return report, await outbox.any_due(conn)


@dramatiq.actor(
    actor_name="webhooks.dispatch",
    queue_name=QUEUE,
    # Each row's failures are handled inside; what escapes (the database is down) is retried
    # a few times, and the sweeper covers the rest.
    max_retries=3,
    min_backoff=1_000,
    max_backoff=30_000,
    time_limit=10 * 60 * 1000,
)
async def dispatch_job() -> None:
    """Posts due webhook deliveries and marks each delivered, retried or failed; sends itself
    again while rows remain, and a delayed copy for the next retry."""
    res = resources.current()
    report, due = await dispatch_once(res.pool, res.settings)
    if report is None:
        return  # this process is sending already
    if report.delivered or report.retried or report.failed:
        log.info(
            "webhooks.dispatched",
            delivered=report.delivered,
            retried=report.retried,
            failed=report.failed,
            more=report.more,
        )
    if due:
        await asyncio.to_thread(dispatch_job.send)
    elif report.wake_at is not None:
        await outbox_family.schedule_wake(
            res.redis, _wake_key(res.settings), report.wake_at, dispatch_job
        )


@dramatiq.actor(actor_name="webhooks.sweep", queue_name=QUEUE, max_retries=0, time_limit=60_000)
async def sweep_job() -> None:
    """Puts back deliveries a dead worker had claimed; sends `webhooks.dispatch` if rows are
    due, else a delayed one for the next retry."""
    res = resources.current()
    await outbox_family.sweep_and_wake(
        res.pool,
        res.redis,
        outbox,
        event="webhooks.claims_lapsed",
        wake_key=_wake_key(res.settings),
        dispatch=dispatch_job,
    )
