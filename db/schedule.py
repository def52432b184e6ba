"""Scheduled enforcement runs: on a date, with countdown reminders before it.

A `scheduled` run waits for its `enforce_at` with the requirement still off; the organization
row mirrors the date (`organizations.enforce_at`) for the banner. `start_due` turns each due
run's requirement on and makes the run `queued` in one transaction, with an UPDATE that only a
run still `scheduled` passes: two clocks, a redelivered message or a restarted clock start it
once. Locks: the organization FOR UPDATE first, as the switch takes it, then the run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from db.audit import Actor
from require2fa import compliance

# Countdown stages: the reminder goes out this many days before `enforce_at`, each once.
STAGES = (14, 7, 1)
MAX_AHEAD = timedelta(days=365)


async def scheduled_run(conn: asyncpg.Connection, organization_id: int) -> asyncpg.Record | None:
    """The organization's scheduled run, locked."""
    return await conn.fetchrow(
        """select * from enforcement_runs where organization_id = $1 and status = 'scheduled'
           for update""",
        organization_id,
    )


async def cancel(conn: asyncpg.Connection, organization_id: int) -> int:
    """Cancels the organization's scheduled run (call with the organization locked)."""
    result = await conn.execute(
        """update enforcement_runs
           set status = 'cancelled', finished_at = clock_timestamp(), updated_at = clock_timestamp()
           where organization_id = $1 and status = 'scheduled'""",
        organization_id,
    )
    await conn.execute("update organizations set enforce_at = null where id = $1", organization_id)
    return int(result.split()[-1])


async def create(
    conn: asyncpg.Connection, organization_id: int, *, actor: Actor, enforce_at: datetime
) -> asyncpg.Record:
    """Writes the scheduled run (call with the organization locked and none scheduled)."""
    run = await conn.fetchrow(
        """insert into enforcement_runs (organization_id, status, enforce_at, actor_user_id,
                                         actor_token_id, actor_label, actor_ip)
           values ($1, 'scheduled', $2, $3, $4, $5, $6::inet) returning *""",
        organization_id,
        enforce_at,
        actor.user_id,
        actor.token_id,
        actor.label,
        actor.ip_address,
    )
    await conn.execute(
        "update organizations set enforce_at = $2 where id = $1", organization_id, enforce_at
    )
    return run


async def start_due(conn: asyncpg.Connection) -> list[int]:
    """Starts every scheduled run whose time has come, each in its own transaction: the
    requirement goes on and the run becomes `queued` (its commit wakes a worker's coordinator,
    `jobs.wakeup`; the enforcement sweeper sends it otherwise). A run whose organization
    turned single sign-on on meanwhile is cancelled instead. Returns the runs started."""
    started: list[int] = []
    due = await conn.fetch(
        """select id, organization_id from enforcement_runs
           where status = 'scheduled' and enforce_at <= now() order by enforce_at"""
    )
    for item in due:
        async with conn.transaction():
            org = await conn.fetchrow(
                "select * from organizations where id = $1 for update", item["organization_id"]
            )
            run = await conn.fetchrow(
                """select * from enforcement_runs
                   where id = $1 and status = 'scheduled' and enforce_at <= now() for update""",
                item["id"],
            )
            if org is None or run is None:
                continue  # started or cancelled by someone else meanwhile
            if org["sso_enabled"]:
                await cancel(conn, org["id"])
                continue
            await conn.execute(
                """update organizations set require_2fa = true, enforce_at = null
                   where id = $1""",
                org["id"],
            )
            await conn.execute(
                """update enforcement_runs
                   set status = 'queued', updated_at = clock_timestamp()
                   where id = $1 and status = 'scheduled'""",
                run["id"],
            )
            started.append(run["id"])
    return started


def stage_due(enforce_at: datetime, now: datetime, done: int | None) -> int | None:
    """The countdown stage to send now: the nearest stage whose time has come and that is not
    done yet (a run scheduled three days ahead sends its 7-day reminder at once, then the 1-day
    one). None when nothing is due."""
    due = [days for days in STAGES if now >= enforce_at - timedelta(days=days)]
    if not due or now >= enforce_at:
        return None
    stage = min(due)
    if done is not None and stage >= done:
        return None
    return stage


async def countdown_candidates(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Scheduled runs within the first stage of their date, with their organization, and the
    database's `now`."""
    return await conn.fetch(
        """select r.id, r.organization_id, r.enforce_at, r.countdown_done,
                  o.name as org_name, o.slug as org_slug, now() as now
           from enforcement_runs r join organizations o on o.id = r.organization_id
           where r.status = 'scheduled' and r.enforce_at > now()
             and r.enforce_at <= now() + $1::interval""",
        timedelta(days=max(STAGES)),
    )


async def mark_countdown(conn: asyncpg.Connection, run_id: int, stage: int) -> None:
    await conn.execute(
        """update enforcement_runs set countdown_done = least(coalesce(countdown_done, $2), $2)
           where id = $1""",
        run_id,
        stage,
    )


async def deadlines_for(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    """The organizations of the user that will require 2FA on a date the user does not meet
    yet (in its scope, no second factor, no exemption): the banner on every page."""
    noncompliant = compliance.noncompliant_sql(
        "m.user_id", exempt_until_sql="m.exempt_2fa_until", idp_organization_sql="o.id"
    )
    return await conn.fetch(
        f"""select o.name, o.slug, o.enforce_at
            from members m join organizations o on o.id = m.organization_id
            where m.user_id = $1 and o.enforce_at is not null and {noncompliant}
              and {compliance.in_scope_sql("m.id", "m.role")}
            order by o.enforce_at""",
        user_id,
    )
