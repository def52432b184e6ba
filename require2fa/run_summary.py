"""The summary email of a finished enforcement run: one to each owner, once per run."""

from __future__ import annotations

import asyncpg

from db import outbox
from db import run_summary as statements
from require2fa import email_contexts


async def queue(
    conn: asyncpg.Connection, run: asyncpg.Record, *, base_url: str, org_name: str, org_slug: str
) -> int:
    """Queues `enforcement_summary` to every active owner of the run's organization, in the
    caller's transaction (the one that finished the run), and marks the run summarized. The
    dedupe key names the run and the owner, so a second call for the same run queues nothing.
    Returns how many were new.

    The rows carry no `enforcement_id`: the run's email counts are the removed members' emails.
    """
    owners = await statements.owners(conn, run["organization_id"])
    emails_queued, emails_sent = await outbox.counts_for_enforcement(conn, run["id"])
    await statements.mark_queued(conn, run["id"])
    context = email_contexts.enforcement_summary(
        base_url=base_url,
        org_name=org_name,
        org_slug=org_slug,
        run_id=run["id"],
        removed=run["removed"],
        skipped=run["skipped"],
        total=run["total"],
        emails_queued=emails_queued,
        emails_sent=emails_sent,
        status=run["status"],
        error=run["error"],
    )
    return await outbox.enqueue_many(
        conn,
        [
            outbox.Email(
                template="enforcement_summary",
                to=owner["email"],
                context=context,
                dedupe_key=f"summary:{run['id']}:{owner['id']}",
                organization_id=run["organization_id"],
                member_id=owner["id"],
            )
            for owner in owners
        ],
    )


async def queue_failed(conn: asyncpg.Connection, *, base_url: str) -> int:
    """The summaries of runs that ended `failed` (the sweeper gave up on a batch) and have none
    yet; in the caller's transaction. Returns how many runs were summarized."""
    failed = await statements.failed_unsummarized(conn)
    for run in failed:
        await queue(
            conn, run, base_url=base_url, org_name=run["org_name"], org_slug=run["org_slug"]
        )
    return len(failed)
