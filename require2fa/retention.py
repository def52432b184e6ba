"""Retention (issue 30): one pass of pruning, for the clock and `require2fa prune`.

A pass deletes finished email rows and webhook deliveries past the outbox retention and the
sessions whose time is up, in bounded batches of one short transaction each; creates the audit
log's month partitions ahead; drops the months wholly past the audit retention; and records
what it did as one `maintenance` audit entry. Every transaction sets a short `lock_timeout`: a
batch or a month that would wait behind a run (a batch's inserts into the audit log, a
dispatcher recording an outcome) is left for the next pass instead of queueing others behind
it. Rows another transaction holds are skipped, never waited for.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import asyncpg
import structlog

from db import audit, retention, sessions

log = structlog.get_logger(__name__)

BATCH = 1_000
# A pass stops after this many batches of each kind; the next pass goes on.
MAX_BATCHES = 500
# The audit log's partitions exist this many months ahead of the current one.
MONTHS_AHEAD = 2
LOCK_TIMEOUT = "500ms"

T = TypeVar("T")


@dataclass
class PruneResult:
    emails: int = 0
    deliveries: int = 0
    sessions: int = 0
    audit_entries: int = 0
    audit_months_dropped: list[str] = field(default_factory=list)
    audit_months_added: list[str] = field(default_factory=list)
    # Batches or months left for the next pass because a lock was not free in time.
    lock_timeouts: int = 0
    seconds: float = 0.0
    dry_run: bool = False


def audit_cutoff(now: datetime, audit_retention: timedelta) -> datetime | None:
    """Entries older than this go (a month partition once all of it is older); None when the
    retention is zero, which keeps everything."""
    return now - audit_retention if audit_retention > timedelta(0) else None


async def prune(
    pool: asyncpg.Pool,
    *,
    outbox_retention: timedelta,
    audit_retention: timedelta,
    dry_run: bool = False,
    batch_size: int = BATCH,
    max_batches: int = MAX_BATCHES,
) -> PruneResult:
    """One pass (see the module). With `dry_run`, counts what would go and changes nothing
    (no partition created, no entry written). Otherwise writes a `maintenance` audit entry with
    the counts."""
    started = time.perf_counter()
    result = PruneResult(dry_run=dry_run)
    async with pool.acquire() as conn:
        now: datetime = await conn.fetchval("select now()")
        cutoff = audit_cutoff(now, audit_retention)
        months = await retention.audit_months_before(conn, cutoff) if cutoff else []
        if dry_run:
            found = await retention.prunable(conn, older_than=outbox_retention)
            result.emails, result.deliveries, result.sessions = (
                found.emails,
                found.deliveries,
                found.sessions,
            )
            result.audit_months_dropped = [month.name for month in months]
            result.audit_entries = sum(month.entries for month in months)
            result.seconds = time.perf_counter() - started
            return result

        async def emails(c: asyncpg.Connection) -> int:
            return await retention.prune_emails(c, older_than=outbox_retention, limit=batch_size)

        async def deliveries(c: asyncpg.Connection) -> int:
            return await retention.prune_deliveries(
                c, older_than=outbox_retention, limit=batch_size
            )

        async def expired_sessions(c: asyncpg.Connection) -> int:
            return await sessions.purge_expired(c, limit=batch_size)

        for name, work in (
            ("emails", emails),
            ("deliveries", deliveries),
            ("sessions", expired_sessions),
        ):
            setattr(result, name, await _batches(conn, work, batch_size, max_batches, result))
        added = await _short(conn, lambda c: retention.add_audit_partitions(c, ahead=MONTHS_AHEAD))
        if isinstance(added, _Locked):
            result.lock_timeouts += 1
        else:
            result.audit_months_added = added
        for month in months:
            entries = await _short(conn, _dropper(month.month))
            if isinstance(entries, _Locked):
                result.lock_timeouts += 1
            elif entries is not None:
                result.audit_entries += entries
                result.audit_months_dropped.append(month.name)
        result.seconds = time.perf_counter() - started
        data = asdict(result)
        del data["dry_run"]
        data["seconds"] = round(result.seconds, 3)
        async with conn.transaction():
            await audit.record(
                conn, organization_id=None, event="maintenance", actor=audit.SYSTEM, data=data
            )
    log.info("pruned", **data)
    return result


def _dropper(month: datetime) -> Callable[[asyncpg.Connection], Awaitable[int | None]]:
    async def drop(conn: asyncpg.Connection) -> int | None:
        return await retention.drop_audit_month(conn, month)

    return drop


class _Locked:
    """What `_short` answers when its transaction gave up on a lock."""


_LOCKED = _Locked()


async def _short(
    conn: asyncpg.Connection, work: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T | _Locked:
    """`work` in a transaction that gives up on a lock after `LOCK_TIMEOUT`."""
    try:
        async with conn.transaction():
            await conn.execute(f"set local lock_timeout = '{LOCK_TIMEOUT}'")
            return await work(conn)
    except asyncpg.LockNotAvailableError:
        log.warning("prune step left for the next pass: a lock was not free")
        return _LOCKED


async def _batches(
    conn: asyncpg.Connection,
    work: Callable[[asyncpg.Connection], Awaitable[int]],
    batch_size: int,
    max_batches: int,
    result: PruneResult,
) -> int:
    """Runs `work` (one batch, returning how many rows it deleted) until a batch comes back
    short, `max_batches` ran, or a lock was not free in time; returns the rows deleted."""
    deleted = 0
    for _ in range(max_batches):
        done = await _short(conn, work)
        if isinstance(done, _Locked):
            result.lock_timeouts += 1
            break
        deleted += done
        if done < batch_size:
            break
    return deleted
