"""Planning a run: claiming its coordinator message, cutting an organization's members into
batches (rows), and recording which batch messages were sent: a window of them at a time, so
that the runs of several organizations share the workers (each finished batch sends its run's
next one)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from db.runs import ACTIVE
from require2fa import compliance

# Batch messages of one run in the queue or in a worker at a time: each finished batch sends its
# run's next one, so another run's batches wait behind at most this many of each run, not
# behind all of them. Above what two worker processes hold (`jobs.broker.QUEUE_PREFETCH`, 3
# each), so that both keep removing on a single run.
WINDOW = 8

# First key of the advisory lock that one run's coordinators take (the second is the run id).
PLAN_LOCK = 0x7232_6670  # "r2fp"


async def claim_coordinators(conn: asyncpg.Connection) -> list[int]:
    """The queued runs whose coordinator nobody has claimed yet, now claimed (one statement: of
    two listeners hearing the same notification, one gets each run). A claim whose message is
    then lost leaves the run queued, for `db.sweeper`."""
    rows = await conn.fetch(
        """update enforcement_runs set coordinator_sent_at = clock_timestamp()
           where status = 'queued' and coordinator_sent_at is null returning id"""
    )
    return [row["id"] for row in rows]


async def try_coordinate(conn: asyncpg.Connection, run_id: int) -> bool:
    """Takes the run's plan lock for this session (until `done_coordinating`, or the session
    ends); False when another coordinator of the run holds it: that one plans and sends."""
    return bool(
        await conn.fetchval("select pg_try_advisory_lock($1, $2)", PLAN_LOCK, run_id % 2**31)
    )


async def done_coordinating(conn: asyncpg.Connection, run_id: int) -> None:
    await conn.execute("select pg_advisory_unlock($1, $2)", PLAN_LOCK, run_id % 2**31)


_PLAN_SQL = """
with numbered as (
    select id, (row_number() over (order by id) - 1) / $3 as batch_no
    from members where organization_id = $2),
cut as (
    select batch_no, min(id) as first_id, max(id) as last_id, count(*) as members
    from numbered group by batch_no),
written as (
    insert into enforcement_batches (run_id, batch_no, first_member_id, last_member_id)
    select $1, batch_no, first_id, last_id from cut
    on conflict do nothing)
select count(*) as batches, coalesce(sum(members), 0) as members from cut
"""

# The same for the members in the scope whose roles and teams are `$4` and `$5` (null: none):
# the scope's members (`require2fa.compliance.scope_members_sql`, read from the teams' members,
# not from every member), each batch listing its members.
_PLAN_SCOPED_SQL = f"""
with numbered as (
    select id, (row_number() over (order by id) - 1) / $3 as batch_no
    from ({
    compliance.scope_members_sql("$2::bigint", roles_sql="$4::text[]", teams_sql="$5::text[]")
}) scoped),
cut as (
    select batch_no, min(id) as first_id, max(id) as last_id, count(*) as members,
           array_agg(id order by id) as ids
    from numbered group by batch_no),
written as (
    insert into enforcement_batches (run_id, batch_no, first_member_id, last_member_id,
                                     member_ids)
    select $1, batch_no, first_id, last_id, ids from cut
    on conflict do nothing)
select count(*) as batches, coalesce(sum(members), 0) as members from cut
"""


async def plan(conn: asyncpg.Connection, run_id: int, *, batch_size: int) -> asyncpg.Record | None:
    """Cuts a queued run into batches of `batch_size` members (by id) and marks it running.

    In the caller's transaction. A run already planned is returned as it is; a cancelled or
    finished one gives None. One statement numbers the organization's members, so memory does not
    grow with the organization. With a scope (`require2FAScope`), only the members in it, as the
    organization has it now (read from its teams' members and its roles), are numbered, and
    each batch lists its members' ids: the run's
    batches, its total and its progress are the scope's, not the whole organization's (a batch
    judges its members again, so one who left the scope meanwhile is skipped; one who joins it
    meets the requirement already, `require2fa.members` refuses the change otherwise). Two
    coordinators of the same run take turns on an advisory lock; the run row itself is only
    locked by the final UPDATE, so that turning the requirement off does not wait for the
    planning of a large organization (a change of the scope meanwhile that needs a new run
    cancels this one, and the final UPDATE then starts nothing).
    """
    await conn.execute("select pg_advisory_xact_lock($1, $2)", PLAN_LOCK, run_id % 2**31)
    run = await conn.fetchrow("select * from enforcement_runs where id = $1", run_id)
    if run is None or run["status"] not in ACTIVE:
        return None
    if run["batches_total"] is not None:
        return run
    scope = await conn.fetchrow(
        """select require_2fa_scope_roles as roles, require_2fa_scope_teams as teams
           from organizations where id = $1""",
        run["organization_id"],
    )
    if scope is not None and (scope["roles"] or scope["teams"]):
        planned = await conn.fetchrow(
            _PLAN_SCOPED_SQL,
            run_id,
            run["organization_id"],
            batch_size,
            scope["roles"],
            scope["teams"],
        )
    else:
        planned = await conn.fetchrow(_PLAN_SQL, run_id, run["organization_id"], batch_size)
    # Only a run still queued starts: one cancelled meanwhile keeps its (unused) batch rows.
    return await conn.fetchrow(
        """update enforcement_runs
           set status = case when $2 = 0 then 'completed' else 'running' end,
               batches_total = $2, total = $3,
               started_at = coalesce(started_at, clock_timestamp()),
               finished_at = case when $2 = 0 then clock_timestamp() end,
               updated_at = clock_timestamp()
           where id = $1 and status = 'queued' returning *""",
        run_id,
        planned["batches"],
        planned["members"],
    )


async def unsent_batches(conn: asyncpg.Connection, run_id: int, *, window: int) -> list[int]:
    """The next batch numbers of the run to send to the workers: the first not yet sent, as
    many as keep at most `window` of the run's batches sent and not done."""
    rows = await conn.fetch(
        """select batch_no from enforcement_batches
           where run_id = $1 and done_at is null and enqueued_at is null
           order by batch_no
           limit greatest(0, $2 - (select count(*) from enforcement_batches
                                    where run_id = $1 and done_at is null
                                      and enqueued_at is not null))""",
        run_id,
        window,
    )
    return [row["batch_no"] for row in rows]


async def take_next(conn: asyncpg.Connection, run_id: int) -> int | None:
    """In the transaction of a batch of the run that is finishing: the run's first batch not
    yet sent, recorded as sent; its message goes once that transaction commits (a crash in
    between leaves it to the sweeper). None when every batch was sent."""
    return await conn.fetchval(
        """update enforcement_batches b set enqueued_at = clock_timestamp()
           from (select batch_no from enforcement_batches
                 where run_id = $1 and done_at is null and enqueued_at is null
                 order by batch_no limit 1
                 for update skip locked) s
           where b.run_id = $1 and b.batch_no = s.batch_no
           returning b.batch_no""",
        run_id,
    )


async def mark_enqueued(conn: asyncpg.Connection, run_id: int, batch_nos: Sequence[int]) -> None:
    """Records that these batches' messages were sent (a batch being removed right now is left
    alone: it is done once its transaction commits)."""
    await conn.execute(
        """update enforcement_batches b set enqueued_at = clock_timestamp()
           from (select batch_no from enforcement_batches
                 where run_id = $1 and batch_no = any($2::int[]) and done_at is null
                 for update skip locked) s
           where b.run_id = $1 and b.batch_no = s.batch_no""",
        run_id,
        list(batch_nos),
    )
