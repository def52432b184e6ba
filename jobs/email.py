"""Email delivery from the outbox (queue `email`).

- `email.dispatch` claims due outbox rows in batches, renders them, sends them over a few SMTP
  connections that it keeps open from batch to batch, and marks every row sent, retried later
  (4xx, connection errors, timeouts: exponential backoff, for up to a day) or failed (5xx for
  that message, or it cannot be rendered). It keeps claiming until nothing is due; a second
  delivery of the same message finds nothing due and sends nothing.
- `email.sweep` puts back rows whose claim lapsed (their worker died) and sends a dispatch when
  rows are due that no wake-up reached. The clock runs it every minute.

After a worker dies (kill -9 included) delivery goes on within seconds, without the sweeper:
a dispatch's slot and the claims on the batch it sends are short (`SLOT_TTL_MS`, `LEASE`) and
renewed every `HEARTBEAT_SECONDS` while the dispatch lives; a dispatch that finds every slot
taken, or rows claimed by others, schedules a wake-up for when those would lapse; and each row
is marked sent as soon as the server accepts it, so the emails sent twice after a crash are at
most one per SMTP connection open at that moment (docs/RELIABILITY.md).

Producers write outbox rows in their own transaction and nothing more: the rows' commit is
announced (`pg_notify('email_outbox')`, migration 0170) and `jobs.wakeup` sends the dispatch.

Sending is limited to `EMAIL_RATE` messages a second for all workers together (a token bucket
in Redis; bulk emails to `BULK_SHARE` of it), and at most `DISPATCHERS` dispatches send at
once, so that a big enforcement keeps a few worker threads busy rather than all of them. Each
claim takes transactional rows first, then bulk rows fairly between organizations
(`db.outbox.claim`), and only about half a second's worth, so what is queued later is claimed
soon after.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from datetime import UTC, datetime, timedelta

import asyncpg
import dramatiq
import redis
import redis.asyncio as aioredis
import structlog

from db import outbox
from jobs import observe, outbox_family, resources
from jobs.mail.delivery import Delivery, Report
from jobs.mail.rate import SendRate
from jobs.mail.slots import DISPATCHERS, SLOT_TTL_MS, Slots
from jobs.mail.smtp import Smtp
from jobs.retry import NO_RETRY, retry_options
from require2fa.settings import Settings

log = structlog.get_logger(__name__)

BATCH_MAX = 100  # rows claimed at a time (fewer when EMAIL_RATE is low)
# A claim holds about this many seconds of sending when every dispatcher sends at once: an
# email queued meanwhile (a transactional one, or a small organization's) waits at most about
# this long behind the rows claimed before it.
BATCH_SECONDS = 0.5
# A claim lapses after this unless its dispatch renews it; the rows are then due again.
LEASE = timedelta(seconds=30)
HEARTBEAT_SECONDS = 5.0  # how often a dispatch renews its slot and its claims
BUDGET_SECONDS = 60.0  # one dispatch message sends for about this long, then sends itself again
CONNECTIONS = 4  # SMTP connections one dispatch sends over at once


def batch_size(settings: Settings) -> int:
    return max(1, min(BATCH_MAX, int(settings.email_rate * BATCH_SECONDS / DISPATCHERS)))


async def dispatch(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    *,
    budget: float = BUDGET_SECONDS,
    batch: int | None = None,
    connections: int = CONNECTIONS,
    tls_context: ssl.SSLContext | None = None,
    lease: timedelta = LEASE,
) -> Report:
    """Sends due outbox rows until none is due or `budget` seconds have passed.

    Writes each row's outcome (sent / queued for a retry / failed, with the server's reply).
    """
    report = Report()
    slots = Slots(redis, settings)
    if not await slots.acquire():
        # The holders send what is due; if they died, their slots lapse within SLOT_TTL_MS and
        # the wake-up finds one free.
        report.busy = True
        report.wake_at = datetime.now(UTC) + timedelta(milliseconds=SLOT_TTL_MS + 1000)
        return report
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    delivery = Delivery(pool, settings, SendRate(redis, settings), report)
    smtps = [Smtp(settings, tls_context) for _ in range(max(1, connections))]
    heartbeat = asyncio.create_task(_heartbeat(slots, delivery, lease))
    try:
        while True:
            async with pool.acquire() as conn:
                rows = await outbox.claim(conn, limit=batch or batch_size(settings), lease=lease)
            if not rows:
                # Free the slot, then look once more: a wake-up that found every slot taken counts
                # on a dispatcher seeing its rows after letting go.
                await slots.release()
                async with pool.acquire() as conn:
                    due = await outbox.any_due(conn)
                if due and await slots.acquire():
                    continue
                break
            await delivery.run(rows, smtps, lease)
            if delivery.unavailable is not None:
                break  # the server cannot be reached: the rest waits for its retry time
            if loop.time() >= deadline or slots.key is None:
                report.more = True  # out of time, or the slot was lost: a new message goes on
                break
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        await slots.release()
        for smtp in smtps:
            await smtp.close()
    if not report.more:
        async with pool.acquire() as conn:
            report.wake_at = await outbox.next_due_at(conn)
    return report


async def _heartbeat(slots: Slots, delivery: Delivery, lease: timedelta) -> None:
    """Renews the dispatch's slot and the claims of the batch it sends, until cancelled. A
    failure is logged and tried again at the next beat: the claims then end by themselves and
    the senders stop before they do."""
    interval = max(0.5, min(HEARTBEAT_SECONDS, lease.total_seconds() / 3))
    while True:
        await asyncio.sleep(interval)
        try:
            key = slots.key
            if key is not None and not await slots.renew() and slots.key == key:
                log.warning("email.slot_lost")
                slots.key = None  # the batch in hand goes on; no further one is claimed
            await delivery.renew(lease)
        except (
            redis.RedisError,
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
        ) as err:
            log.warning("email.heartbeat_failed", error=str(err))


async def sweep(pool: asyncpg.Pool) -> tuple[int, bool]:
    """Puts back rows whose claim lapsed (their worker died); returns (put back, any due)."""
    return await outbox_family.sweep(pool, outbox, "email.claims_lapsed")


def _wake_key(settings: Settings) -> str:
    return f"{settings.redis_namespace}:email:wake"


# --- Actors ---------------------------------------------------------------------------------


@dramatiq.actor(
    actor_name="email.dispatch",
    queue_name="email",
    # Each row's failures are handled inside; what escapes (the database is down) is retried
    # a few times, and the sweeper covers the rest.
    **retry_options(transient=3, other=3, min_backoff=1_000, max_backoff=30_000),
    time_limit=10 * 60 * 1000,
)
async def dispatch_job() -> None:
    """Sends due outbox emails and marks each row sent, retried or failed; sends itself again
    while rows remain, and a delayed copy for the next retry."""
    res = resources.current()
    report = await dispatch(res.pool, res.redis, res.settings)
    if report.sent or report.retried or report.failed:
        await observe.count_emails(
            res.redis,
            res.settings.redis_namespace,
            sent=report.sent,
            retried=report.retried,
            failed=report.failed,
        )
        log.info(
            "email.dispatched",
            sent=report.sent,
            retried=report.retried,
            failed=report.failed,
            more=report.more,
        )
    if report.more:
        await asyncio.to_thread(dispatch_job.send)
    elif report.wake_at is not None:
        await outbox_family.schedule_wake(
            res.redis, _wake_key(res.settings), report.wake_at, dispatch_job
        )


@dramatiq.actor(actor_name="email.sweep", queue_name="email", time_limit=60_000, **NO_RETRY)
async def sweep_job() -> None:
    """Puts back outbox rows a dead worker had claimed; sends `email.dispatch` if rows are due,
    else a delayed one for the next retry."""
    res = resources.current()
    await outbox_family.sweep_and_wake(
        res.pool,
        res.redis,
        outbox,
        event="email.claims_lapsed",
        wake_key=_wake_key(res.settings),
        dispatch=dispatch_job,
    )
