"""Retention: what a finished row is kept for, and its removal (issue 30).

Sent and failed email rows and finished webhook deliveries are deleted once they are older than
the outbox retention, oldest first, a bounded batch per statement (`for update skip locked`, so a
dispatcher recording an outcome is never waited for). The audit log is partitioned by month
(migration 0190): expiry drops whole months, and the months ahead are created before they come.
Each function is one statement; the caller owns the transaction (and its `lock_timeout`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

# One batch of the email prune: the rows deleted, and each run's share of them added to the
# run's `emails_pruned` counters in the same statement, so that a run's counts stay what they
# were (`db.outbox.counts_for_enforcements` adds them back).
_PRUNE_EMAILS_SQL = """
with doomed as (
    select id from email_outbox
     where status in ('sent', 'failed') and coalesce(sent_at, created_at) < now() - $1::interval
     order by coalesce(sent_at, created_at)
     limit $2
     for update skip locked
), gone as (
    delete from email_outbox e where e.id = any(array(select id from doomed))
    returning e.enforcement_id, e.status
), per_run as (
    select enforcement_id, count(*) as emails, count(*) filter (where status = 'sent') as sent
      from gone where enforcement_id is not null group by enforcement_id
), folded as (
    update enforcement_runs r
       set emails_pruned = r.emails_pruned + p.emails,
           emails_pruned_sent = r.emails_pruned_sent + p.sent
      from per_run p where r.id = p.enforcement_id
)
select count(*) from gone
"""

_PRUNE_DELIVERIES_SQL = """
with doomed as (
    select id from webhook_deliveries
     where status in ('delivered', 'failed')
       and coalesce(delivered_at, created_at) < now() - $1::interval
     order by coalesce(delivered_at, created_at)
     limit $2
     for update skip locked
), gone as (
    delete from webhook_deliveries d where d.id = any(array(select id from doomed)) returning 1
)
select count(*) from gone
"""


async def prune_emails(conn: asyncpg.Connection, *, older_than: timedelta, limit: int) -> int:
    """Deletes up to `limit` sent or failed email rows finished more than `older_than` ago, and
    adds each run's share to its `emails_pruned` counters; returns how many."""
    return int(await conn.fetchval(_PRUNE_EMAILS_SQL, older_than, limit))


async def prune_deliveries(conn: asyncpg.Connection, *, older_than: timedelta, limit: int) -> int:
    """Deletes up to `limit` delivered or failed webhook deliveries finished more than
    `older_than` ago; returns how many."""
    return int(await conn.fetchval(_PRUNE_DELIVERIES_SQL, older_than, limit))


@dataclass(frozen=True)
class Prunable:
    emails: int
    deliveries: int
    sessions: int


async def prunable(conn: asyncpg.Connection, *, older_than: timedelta) -> Prunable:
    """How many rows `prune_emails`, `prune_deliveries` and `db.sessions.purge_expired` would
    delete now (nothing is changed)."""
    row = await conn.fetchrow(
        """select (select count(*) from email_outbox
                    where status in ('sent', 'failed')
                      and coalesce(sent_at, created_at) < now() - $1::interval) as emails,
                  (select count(*) from webhook_deliveries
                    where status in ('delivered', 'failed')
                      and coalesce(delivered_at, created_at) < now() - $1::interval) as deliveries,
                  (select count(*) from sessions where expires_at <= now()) as sessions""",
        older_than,
    )
    assert row is not None
    return Prunable(int(row["emails"]), int(row["deliveries"]), int(row["sessions"]))


# --- The audit log's months --------------------------------------------------------------


async def add_audit_partitions(conn: asyncpg.Connection, *, ahead: int) -> list[str]:
    """Creates the missing month partitions of `audit_log` through `ahead` months after the
    current one; returns their names."""
    rows = await conn.fetch("select audit_log_add_partitions(now(), $1) as name", ahead)
    return [row["name"] for row in rows]


@dataclass(frozen=True)
class AuditMonth:
    name: str
    month: datetime
    entries: int


async def audit_months_before(conn: asyncpg.Connection, cutoff: datetime) -> list[AuditMonth]:
    """The month partitions that end at or before `cutoff`, oldest first, with their entries
    (an estimate from the statistics: counting is the drop's job)."""
    rows = await conn.fetch(
        """select p.name, p.month, greatest(c.reltuples, 0)::bigint as entries
             from audit_log_partitions_before($1) p join pg_class c on c.relname = p.name""",
        cutoff,
    )
    return [AuditMonth(row["name"], row["month"], int(row["entries"])) for row in rows]


async def drop_audit_month(conn: asyncpg.Connection, month: datetime) -> int | None:
    """Drops the partition of the month starting at `month`; returns the entries it held, or
    None when it was already gone."""
    entries = await conn.fetchval("select audit_log_drop_partition($1)", month)
    return None if entries is None else int(entries)
