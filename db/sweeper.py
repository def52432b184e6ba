"""The enforcement sweeper's queries: what a crash or a lost message left behind."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from db.planning import PLAN_LOCK, WINDOW

# The sweeper sends a stalled batch again at most this often before its run ends `failed`.
MAX_RESENDS = 10


async def stalled(
    conn: asyncpg.Connection,
    *,
    stale_after: timedelta,
    window: int = WINDOW,
    max_resends: int = MAX_RESENDS,
) -> tuple[list[int], list[tuple[int, int]]]:
    """What a crash or a lost message left behind: runs still queued, and batches of running runs
    that made no progress for `stale_after` (not done, not being removed right now), the first
    `window` of each such run (each finished batch sends the next, as after the coordinator).

    Marks what it returns as (re)sent now, so that the next sweep waits `stale_after` again. A
    run with a batch sent `max_resends` times without finishing ends `failed`.
    Returns (run ids to coordinate, [(run id, batch no)] to send).
    """
    await conn.execute(
        """update enforcement_runs r
           set status = 'failed', finished_at = clock_timestamp(), updated_at = clock_timestamp(),
               error = 'batch ' || b.batch_no || ' did not finish after ' || b.resends
                       || ' re-sends'
           from enforcement_batches b
           where r.status = 'running' and b.run_id = r.id and b.done_at is null
             and b.resends >= $1""",
        max_resends,
    )
    # A run whose coordinator is planning right now holds its plan lock: not stuck, skipped.
    queued = await conn.fetch(
        """update enforcement_runs set updated_at = clock_timestamp()
           where status = 'queued' and updated_at < clock_timestamp() - $1::interval
             and pg_try_advisory_xact_lock($2, (id % 2147483648)::int)
           returning id""",
        stale_after,
        PLAN_LOCK,
    )
    batches = await conn.fetch(
        """with stuck as (
               select id from enforcement_runs
               where status = 'running' and updated_at < clock_timestamp() - $1::interval),
           waiting as (
               select b.run_id, b.batch_no,
                      row_number() over (partition by b.run_id order by b.batch_no) as n
               from enforcement_batches b join stuck s on s.id = b.run_id
               where b.done_at is null
                 and (b.enqueued_at is null or b.enqueued_at < clock_timestamp() - $1::interval)),
           picked as (
               select b.run_id, b.batch_no
               from enforcement_batches b
               join waiting w on w.run_id = b.run_id and w.batch_no = b.batch_no and w.n <= $2
               for update of b skip locked),
           marked as (
               update enforcement_batches b
               set enqueued_at = clock_timestamp(), resends = b.resends + 1
               from picked p where b.run_id = p.run_id and b.batch_no = p.batch_no
               returning b.run_id, b.batch_no),
           touched as (
               update enforcement_runs set updated_at = clock_timestamp()
               where id in (select run_id from marked))
           select run_id, batch_no from marked order by run_id, batch_no""",
        stale_after,
        window,
    )
    return [row["id"] for row in queued], [(row["run_id"], row["batch_no"]) for row in batches]
