"""Enforcement runs: the row that turning the requirement on writes, and reading runs back.

A run goes `queued` → `running` (planned: batches written, `db.planning`) → `completed`, or
`cancelled` when the requirement is turned off, or `failed` (`db.sweeper`). A run on a date
waits as `scheduled` first (`db.schedule`).
"""

from __future__ import annotations

import asyncpg

from db import outbox
from db.audit import Actor

ACTIVE = ("queued", "running")
STATUSES = ("scheduled", "queued", "running", "completed", "cancelled", "failed")


async def insert(
    conn: asyncpg.Connection, organization_id: int, actor: Actor
) -> asyncpg.Record | None:
    """A `queued` run; None when one is under way already (one per organization at a time)."""
    return await conn.fetchrow(
        """insert into enforcement_runs (organization_id, actor_user_id, actor_token_id,
                                         actor_label, actor_ip)
           values ($1, $2, $3, $4, $5::inet)
           on conflict (organization_id) where status in ('queued', 'running') do nothing
           returning *""",
        organization_id,
        actor.user_id,
        actor.token_id,
        actor.label,
        actor.ip_address,
    )


async def current_run(conn: asyncpg.Connection, organization_id: int) -> asyncpg.Record | None:
    """The run under way, else the latest one."""
    return await conn.fetchrow(
        """select * from enforcement_runs where organization_id = $1
           order by status in ('scheduled', 'queued', 'running') desc, id desc limit 1""",
        organization_id,
    )


async def cancel_active(conn: asyncpg.Connection, organization_id: int) -> int:
    """Cancels the organization's run under way; its batches not yet done will remove nobody."""
    result = await conn.execute(
        """update enforcement_runs
           set status = 'cancelled', finished_at = clock_timestamp(), updated_at = clock_timestamp()
           where organization_id = $1 and status in ('queued', 'running')""",
        organization_id,
    )
    return int(result.split()[-1])


async def get_run(
    conn: asyncpg.Connection, run_id: int, *, organization_id: int | None = None
) -> asyncpg.Record | None:
    """One run (of that organization, when given)."""
    return await conn.fetchrow(
        """select * from enforcement_runs
           where id = $1 and ($2::bigint is null or organization_id = $2)""",
        run_id,
        organization_id,
    )


async def email_counts(conn: asyncpg.Connection, run_id: int) -> tuple[int, int]:
    """(emails queued in total, emails sent) for one run."""
    return await outbox.counts_for_enforcement(conn, run_id)


async def email_counts_of(
    conn: asyncpg.Connection, run_ids: list[int]
) -> dict[int, tuple[int, int]]:
    """`email_counts` of each run, in one statement."""
    return await outbox.counts_for_enforcements(conn, run_ids)


async def runs_page(
    conn: asyncpg.Connection, organization_id: int, *, before_id: int | None, limit: int
) -> list[asyncpg.Record]:
    """Newest first, keyset on id."""
    return await conn.fetch(
        """select * from enforcement_runs
           where organization_id = $1 and ($2::bigint is null or id < $2)
           order by id desc limit $3""",
        organization_id,
        before_id,
        limit,
    )
