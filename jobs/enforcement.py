"""The require-2FA fan-out: a coordinator cuts a run into batches, one message per batch removes
that batch's members who still have no second factor, and a sweeper drives what a crash left.

Every message may arrive twice and any worker may die at any line: the coordinator plans once
(its batches are rows), a batch is done in one transaction that marks it done, and whatever was
never sent or never finished is found again by `enforcement.sweep`, which the clock sends every
minute. Thin shims over the `async def` functions below, which tests await directly.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import dramatiq
import structlog

from db import batches, organizations, planning, sweeper
from db.removals import Candidate
from jobs.resources import current
from jobs.retry import NO_RETRY, retry_options
from require2fa import reminders, removal, run_summary
from require2fa.settings import Settings

log = structlog.get_logger(__name__)

QUEUE = "enforcement"
BATCH_SIZE = 1000
SEND_CHUNK = 100  # batch messages the sweeper sends in one go off the event loop
# A running run that made no progress for this long has its unfinished batches sent again.
STALE_AFTER = timedelta(seconds=60)


# Batches that one worker process removes at once (the others wait their turn). Each is one
# transaction on its own connection, mostly the database's CPU: more at once than it has cores
# only makes them queue on each other and on the CPU that users' requests need.
BATCHES_AT_ONCE = 2
_batch_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def batch_slots() -> asyncio.Semaphore:
    """The batch slots of the running event loop (a worker process has one; tests start many)."""
    loop = asyncio.get_running_loop()
    slots = _batch_slots.get(loop)
    if slots is None:
        slots = _batch_slots[loop] = asyncio.Semaphore(BATCHES_AT_ONCE)
    return slots


# Lost connections, timeouts and lock conflicts retry for long; anything else a few times
# (the sweeper sends the batch again later if it still is not done).
TRANSIENT_RETRIES, OTHER_RETRIES = 20, 3


# --- Coordinator -------------------------------------------------------------------------------


async def coordinate_run(
    pool: asyncpg.Pool,
    run_id: int,
    *,
    batch_size: int = BATCH_SIZE,
    send: Callable[[int, int], object] | None = None,
    base_url: str | None = None,
) -> int:
    """Plans the run (once) and sends `enforcement.remove_batch` for its first batches not yet
    sent, up to `planning.WINDOW` of them in flight; each finished batch sends the next. A run
    with nobody to judge (a scope without members) is completed by its plan, and, with
    `base_url`, its owners' summary queued in the plan's transaction, as a last batch would.

    Returns how many batch messages it sent. Sending happens after the plan commits; what was
    sent is recorded, so a redelivered coordinator sends only what was not recorded. A second
    coordinator of the run arriving while the first plans or sends (the listener's and a sender's
    by hand, a redelivery) returns 0 at once: the first one holds the run's plan lock.
    """
    send = send or _send_batch
    async with pool.acquire() as conn:
        if not await planning.try_coordinate(conn, run_id):
            log.info("enforcement.coordinating_elsewhere", run_id=run_id)
            return 0
        try:
            async with conn.transaction():
                run = await planning.plan(conn, run_id, batch_size=batch_size)
                if run is not None and run["status"] == "completed" and base_url is not None:
                    org = await organizations.get(conn, run["organization_id"])
                    await run_summary.queue(
                        conn, run, base_url=base_url, org_name=org["name"], org_slug=org["slug"]
                    )
            if run is None or run["status"] != "running":
                return 0
            pending = await planning.unsent_batches(conn, run_id, window=planning.WINDOW)
            log.info(
                "enforcement.planned",
                run_id=run_id,
                members=run["total"],
                batches=run["batches_total"],
                sent=len(pending),
            )
            await asyncio.to_thread(_send_all, send, run_id, pending)
            await planning.mark_enqueued(conn, run_id, pending)
        finally:
            await planning.done_coordinating(conn, run_id)
    return len(pending)


def _send_batch(run_id: int, batch_no: int) -> None:
    remove_batch.send(run_id, batch_no)


def _send_pairs(send: Callable[[int, int], object], pairs: list[tuple[int, int]]) -> None:
    for run_id, batch_no in pairs:
        send(run_id, batch_no)


def _send_all(send: Callable[[int, int], object], run_id: int, batch_nos: list[int]) -> None:
    for batch_no in batch_nos:
        send(run_id, batch_no)


@dramatiq.actor(
    actor_name="enforcement.coordinate",
    queue_name=QUEUE,
    **retry_options(
        transient=TRANSIENT_RETRIES, other=OTHER_RETRIES, min_backoff=1_000, max_backoff=60_000
    ),
    time_limit=30 * 60 * 1000,  # planning ten million members takes about a minute
)
async def coordinate(run_id: int) -> None:
    """Plans run `run_id` into batch rows, marks it running, sends its batch messages."""
    resources = current()
    await coordinate_run(resources.pool, run_id, base_url=resources.settings.base_url)


# --- One batch ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchResult:
    removed: int
    skipped: int
    run_status: str
    next_batch: int | None = None  # the run's batch to send now (recorded as sent)


async def act_on(
    conn: asyncpg.Connection,
    head: batches.BatchHead,
    found: Sequence[Candidate],
    settings: Settings,
) -> tuple[int, int]:
    """The organization's action (`removal.enforce`) on the batch's candidates, in the caller's
    transaction: (acted on, members in the batch's id range)."""
    return await removal.enforce(
        conn,
        organization=removal.Organization(
            id=head.organization_id,
            name=head.org_name,
            slug=head.org_slug,
            level=head.level,
            now=head.now,
            action=head.action,
            sso_idp=head.sso_idp,
        ),
        found=found,
        actor=head.actor,
        member_range=(head.first_member_id, head.last_member_id),
        base_url=settings.base_url,
        secret_key=settings.secret_key,
        reinstatement_window=settings.reinstatement_window,
        run_id=head.run_id,
    )


async def remove_batch_now(
    pool: asyncpg.Pool, settings: Settings, run_id: int, batch_no: int
) -> BatchResult | None:
    """Removes (or blocks, by the organization's action), in one transaction, the batch's members
    (a scoped run's: the scope's members it lists) in scope who are still active and still have
    no second factor that the organization's level accepts: members row, `member.pending`
    (`member.blocked`) entry and outbox email per member, the run's counters, the batch marked
    done, the run's next batch recorded as sent (for the caller to send). None when there was
    nothing to do (done already, run cancelled or finished)."""
    started = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction():
        head = await batches.start_batch(conn, run_id, batch_no)
        if head is None:
            return None
        found = await batches.candidates(conn, head)  # their users locked
        removed, in_range = await act_on(conn, head, found, settings)
        skipped = head.covered(in_range) - removed
        next_batch = await planning.take_next(conn, run_id)
        run = await batches.finish_batch(
            conn,
            head,
            removed=removed,
            skipped=skipped,
            seconds=time.perf_counter() - started,
        )
        if run["status"] == "completed":
            # In the transaction that completed the run: once per run, whoever delivers what.
            await run_summary.queue(
                conn,
                run,
                base_url=settings.base_url,
                org_name=head.org_name,
                org_slug=head.org_slug,
            )
    return BatchResult(
        removed=removed,
        skipped=skipped,
        run_status=run["status"],
        next_batch=next_batch,
    )


@dramatiq.actor(
    actor_name="enforcement.remove_batch",
    queue_name=QUEUE,
    **retry_options(
        transient=TRANSIENT_RETRIES, other=OTHER_RETRIES, min_backoff=500, max_backoff=60_000
    ),
    time_limit=10 * 60 * 1000,
)
async def remove_batch(run_id: int, batch_no: int) -> None:
    """Removes batch `batch_no` of run `run_id` (members, audit, outbox, counters); then sends
    the run's next batch; the outbox rows' commit wakes the email dispatcher (`jobs.wakeup`)."""
    resources = current()
    async with batch_slots():
        result = await remove_batch_now(resources.pool, resources.settings, run_id, batch_no)
    if result is None:
        return
    if result.next_batch is not None:
        await asyncio.to_thread(_send_batch, run_id, result.next_batch)
    log.info(
        "enforcement.batch_done",
        run_id=run_id,
        batch_no=batch_no,
        removed=result.removed,
        skipped=result.skipped,
        run_status=result.run_status,
    )


# --- Reminders before turning it on -------------------------------------------------------------


async def queue_reminders_now(
    pool: asyncpg.Pool, settings: Settings, organization_id: int, day: str, except_user_id: int
) -> int:
    """Queues the `reminder_2fa` emails of `day` for the organization (`require2fa.reminders`);
    returns how many were new (the dedupe key names the day, so a second delivery queues none)."""
    async with pool.acquire() as conn:
        result = await reminders.remind(
            conn,
            organization_id=organization_id,
            base_url=settings.base_url,
            day=day,
            except_user_id=except_user_id,
        )
    return result.queued


@dramatiq.actor(
    actor_name="enforcement.queue_reminders",
    queue_name=QUEUE,
    **retry_options(
        transient=TRANSIENT_RETRIES, other=OTHER_RETRIES, min_backoff=1_000, max_backoff=60_000
    ),
    time_limit=30 * 60 * 1000,
)
async def queue_reminders(organization_id: int, day: str, except_user_id: int) -> None:
    """Queues the day's "will require 2FA" emails (outbox) for members without 2FA (their
    commit wakes the email dispatcher)."""
    resources = current()
    queued = await queue_reminders_now(
        resources.pool, resources.settings, organization_id, day, except_user_id
    )
    log.info("enforcement.reminders_queued", organization_id=organization_id, queued=queued)


# --- Sweeper -----------------------------------------------------------------------------------


async def sweep_now(
    pool: asyncpg.Pool,
    *,
    stale_after: timedelta = STALE_AFTER,
    send_coordinate: Callable[[int], object] | None = None,
    send_batch: Callable[[int, int], object] | None = None,
    base_url: str | None = None,
) -> tuple[int, int]:
    """Sends again what is stuck: coordinators of runs still queued, batches of running runs
    that stopped progressing; with `base_url`, queues the owners' summary of runs that ended
    `failed`. Returns (coordinators sent, batches sent)."""
    send_coordinate = send_coordinate or coordinate.send
    send_batch = send_batch or _send_batch
    async with pool.acquire() as conn, conn.transaction():
        queued, stuck = await sweeper.stalled(conn, stale_after=stale_after)
    if base_url is not None:
        async with pool.acquire() as conn, conn.transaction():
            await run_summary.queue_failed(conn, base_url=base_url)
    for run_id in queued:
        await asyncio.to_thread(send_coordinate, run_id)
    for start in range(0, len(stuck), SEND_CHUNK):
        chunk = stuck[start : start + SEND_CHUNK]
        await asyncio.to_thread(_send_pairs, send_batch, chunk)
    if queued or stuck:
        log.warning("enforcement.swept", coordinators=len(queued), batches=len(stuck))
    return len(queued), len(stuck)


@dramatiq.actor(
    actor_name="enforcement.sweep",
    queue_name=QUEUE,
    **NO_RETRY,
    time_limit=5 * 60 * 1000,
)
async def sweep() -> None:
    """Re-sends coordinators of queued runs and unfinished batches of stalled running runs."""
    resources = current()
    await sweep_now(resources.pool, base_url=resources.settings.base_url)
