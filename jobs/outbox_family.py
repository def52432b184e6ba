"""What the two outbox families (emails in `db.outbox`, webhook deliveries in `db.webhooks`)
share: the sweep that puts back a dead worker's lapsed claims, and the delayed wake-up of their
dispatcher for the next retry, sent once however many callers ask for it."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import dramatiq
import redis.asyncio as aioredis
import structlog

log = structlog.get_logger(__name__)

# Records a wake-up at ARGV[1] (ms since the epoch) unless one is already pending at or before
# it; returns 1 when the caller should schedule it.
_WAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = tonumber(ARGV[1])
local pending = tonumber(redis.call('GET', KEYS[1]))
if pending and pending > now and pending <= at then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', math.max(1, at - now) + 60000)
return 1
"""


class Queue(Protocol):
    """The queries of one outbox table (the modules `db.outbox` and `db.webhooks`)."""

    async def release_lapsed(self, conn: asyncpg.Connection) -> int: ...

    async def any_due(self, conn: asyncpg.Connection) -> bool: ...

    async def next_due_at(self, conn: asyncpg.Connection) -> datetime | None: ...


async def schedule_wake(
    redis_client: aioredis.Redis, key: str, at: datetime, dispatch: dramatiq.Actor[Any, Any]
) -> bool:
    """Sends `dispatch` delayed until `at` unless one at or before it is pending (under `key`)."""
    at_ms = int(at.timestamp() * 1000)
    if not await redis_client.eval(_WAKE, 1, key, at_ms):  # type: ignore[misc]
        return False
    delay_ms = max(1000, at_ms - int(time.time() * 1000))
    await asyncio.to_thread(dispatch.send_with_options, delay=delay_ms)
    return True


async def sweep(pool: asyncpg.Pool, queue: Queue, event: str) -> tuple[int, bool]:
    """Puts back rows whose claim lapsed (their worker died), logged as `event`; returns
    (put back, any due)."""
    async with pool.acquire() as conn:
        released = await queue.release_lapsed(conn)
        due = await queue.any_due(conn)
    if released:
        log.warning(event, rows=released)
    return released, due


async def sweep_and_wake(
    pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    queue: Queue,
    *,
    event: str,
    wake_key: str,
    dispatch: dramatiq.Actor[Any, Any],
) -> None:
    """The sweep actors' work: the sweep, then `dispatch` now if rows are due, else a delayed
    one for the next retry."""
    _released, due = await sweep(pool, queue, event)
    if due:
        await asyncio.to_thread(dispatch.send)
        return
    async with pool.acquire() as conn:
        wake_at = await queue.next_due_at(conn)
    if wake_at is not None:
        await schedule_wake(redis_client, wake_key, wake_at, dispatch)
