"""The statements behind the summary email of a finished enforcement run (what it says and to
whom is `require2fa.run_summary`'s)."""

from __future__ import annotations

import asyncpg


async def owners(conn: asyncpg.Connection, organization_id: int) -> list[asyncpg.Record]:
    """The organization's active owners (member id, email), in member id order."""
    return await conn.fetch(
        """select m.id, u.email from members m join users u on u.id = m.user_id
           where m.organization_id = $1 and m.role = 'owner' order by m.id""",
        organization_id,
    )


async def mark_queued(conn: asyncpg.Connection, run_id: int) -> None:
    """The run's summary is queued (in the transaction that queues it)."""
    await conn.execute(
        "update enforcement_runs set summary_queued_at = now() where id = $1", run_id
    )


async def failed_unsummarized(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Runs that ended `failed` without a summary yet, with their organization's name and slug,
    locked (others' skipped), in the caller's transaction."""
    return await conn.fetch(
        """select r.*, o.name as org_name, o.slug as org_slug
           from enforcement_runs r join organizations o on o.id = r.organization_id
           where r.status = 'failed' and r.summary_queued_at is null
           order by r.id for update of r skip locked"""
    )
