"""The claim-and-lease pattern that the email outbox and the webhook deliveries share.

A row is *due* when it is queued (or its claim has lapsed) and its next attempt time has come:
`sending` rows whose `claimed_until` passed belong to a worker that died. A dispatcher claims due
rows with FOR UPDATE SKIP LOCKED (concurrent dispatchers never share a row) until its lease runs
out, counting an attempt; the sweeper puts back the rows whose lease lapsed.

The table names are our constants, never input.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

DUE = """status in ('queued', 'sending') and next_attempt_at <= now()
          and (claimed_until is null or claimed_until < now())"""


class Queue:
    """The statements of one table that follows the pattern (`email_outbox`,
    `webhook_deliveries`)."""

    def __init__(self, table: str, *, order: str = "next_attempt_at") -> None:
        self.table = table
        self.order = order  # the claim's order: our constant, with an index that follows it

    def claimed_sql(self) -> str:
        """`with due as (…), claimed as (…)`: up to `$1` due rows, first in the queue's `order`,
        set `sending` until `now() + $2` (the lease), each with an attempt counted; `claimed`
        holds the updated rows. The caller adds the `select … from claimed` it needs."""
        return f"""with due as (
                select id from {self.table}
                 where {DUE}
                 order by {self.order}
                 limit $1
                   for update skip locked),
            claimed as (
                update {self.table} t
                   set status = 'sending', claimed_until = now() + $2::interval,
                       attempts = t.attempts + 1
                  from due
                 where t.id = due.id
             returning t.*)"""

    async def release_lapsed(self, conn: asyncpg.Connection) -> int:
        """Puts back in the queue the rows whose claim lapsed: the worker holding them died."""
        result = await conn.execute(
            f"""update {self.table} set status = 'queued', claimed_until = null
                 where status = 'sending' and claimed_until < now()"""
        )
        return int(result.split()[-1])

    async def any_due(self, conn: asyncpg.Connection) -> bool:
        """Whether some row is waiting to be claimed now."""
        return bool(await conn.fetchval(f"select exists (select 1 from {self.table} where {DUE})"))

    async def next_due_at(self, conn: asyncpg.Connection) -> datetime | None:
        """When the earliest queued row (a retry) is due. Lapsed claims are the sweeper's."""
        return await conn.fetchval(
            f"select min(next_attempt_at) from {self.table} where status = 'queued'"
        )
