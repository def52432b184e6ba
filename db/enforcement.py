"""Require-2FA enforcement: the switch, runs cut into batches, and the removal of one batch.

A run goes `queued` → `running` (planned: batches written) → `completed`, or `cancelled` when the
requirement is turned off. Locks are always taken in the same order, so none of these can
deadlock with another:

    organization (FOR SHARE by batches, FOR UPDATE by the switch)
    → batch row → users (`db.users.lock`, shared with 2FA enrollment) → members → run row

A batch holds its organization FOR SHARE for its whole transaction, so turning the requirement
off waits for the batches in flight, and every batch that starts afterwards sees the run
cancelled and removes nobody.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from db import audit, outbox, users
from db.audit import Actor
from db.users import HAS_2FA_SQL
from require2fa import compliance

ACTIVE = ("queued", "running")
# First key of the advisory lock that one run's coordinators take (the second is the run id).
PLAN_LOCK = 0x7232_6670  # "r2fp"
# The sweeper sends a stalled batch again at most this often before its run ends `failed`.
MAX_RESENDS = 10
STATUSES = ("queued", "running", "completed", "cancelled", "failed")

NEEDS_PERSONAL_2FA = "Cannot require two-factor authentication without personal two-factor enabled."
NOT_WITH_SSO = "Cannot require two-factor authentication with SSO enabled"
OWNERS_ONLY = "Only an owner can change two-factor authentication or single sign-on settings."

# `db.outbox.message_id` as SQL, for outbox rows written by one set-based statement
# (tests/jobs/test_enforcement.py checks that both give the same id).
MESSAGE_ID_SQL = (
    "'<' || left(encode(sha256(convert_to({key}, 'UTF8')), 'hex'), 32) || '@require2fa>'"
)


class Refused(Exception):
    """The change is not allowed; `status` and `detail` are what the API answers."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Change:
    """The outcome of `change_organization`."""

    org: asyncpg.Record
    run: asyncpg.Record | None  # the run this change started, or the one already under way
    started: bool  # a new run was written: send its coordinator once the transaction commits


async def change_organization(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    actor: Actor,
    role: str,
    name: str | None = None,
    require_2fa: bool | None = None,
    sso_enabled: bool | None = None,
) -> Change:
    """Applies a settings change in the caller's transaction, with its `org.edit` entries.

    Turning require-2FA on writes a `queued` run; turning it on while it is on starts nothing and
    returns the run under way (or the latest one). Turning it off, or turning SSO on while it is
    required, cancels the run under way. Raises `Refused` when the rules forbid the change.
    """
    org = await conn.fetchrow(
        "select * from organizations where id = $1 for update", organization_id
    )
    if org is None:
        raise Refused(404, "The requested organization does not exist.")
    if require_2fa and actor.user_id is not None:
        # The same lock as deleting a factor: the owner cannot lose their last factor while
        # turning the requirement on (the order is organization, then users, as in a batch).
        await users.lock(conn, [actor.user_id])
    await check(
        conn,
        org,
        actor=actor,
        role=role,
        name=name,
        require_2fa=require_2fa,
        sso_enabled=sso_enabled,
    )
    new_sso = org["sso_enabled"] if sso_enabled is None else sso_enabled
    new_require = org["require_2fa"] if require_2fa is None else require_2fa
    if new_sso and new_require:
        new_require = False  # single sign-on takes over: the identity provider enforces 2FA

    edits: dict[str, str] = {}
    if name is not None and name != org["name"]:
        edits["name"] = f"to {name}"
    if new_sso != org["sso_enabled"]:
        edits["sso_enabled"] = f"to {new_sso}"
    was_required = org["require_2fa"]
    if edits or new_require != was_required:
        org = await conn.fetchrow(
            """update organizations set name = coalesce($2, name), sso_enabled = $3,
                                        require_2fa = $4
               where id = $1 returning *""",
            organization_id,
            name,
            new_sso,
            new_require,
        )
    if edits:
        await audit.record(
            conn, organization_id=organization_id, event="org.edit", actor=actor, data=edits
        )
    if new_require == was_required:
        run = await current_run(conn, organization_id) if require_2fa else None
        return Change(org=org, run=run, started=False)
    await audit.record(
        conn,
        organization_id=organization_id,
        event="org.edit",
        actor=actor,
        data={"require_2fa": f"to {new_require}"},
    )
    if not new_require:
        await cancel_active(conn, organization_id)
        return Change(org=org, run=None, started=False)
    run = await conn.fetchrow(
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
    if run is None:  # a run left under way while it was off; let that one finish the work
        return Change(org=org, run=await current_run(conn, organization_id), started=False)
    return Change(org=org, run=run, started=True)


async def check(
    conn: asyncpg.Connection,
    org: asyncpg.Record,
    *,
    actor: Actor,
    role: str,
    name: str | None = None,
    require_2fa: bool | None = None,
    sso_enabled: bool | None = None,
) -> None:
    """Raises `Refused` when the rules forbid the change; changes nothing (the settings page
    asks it before its confirm step, `change_organization` again under the row lock)."""
    if (require_2fa is not None or sso_enabled is not None) and role != "owner":
        raise Refused(403, OWNERS_ONLY)
    if name is not None and role not in ("owner", "manager"):
        raise Refused(403, "Only owners and managers can rename the organization.")
    new_sso = org["sso_enabled"] if sso_enabled is None else sso_enabled
    if require_2fa:
        if new_sso:
            raise Refused(400, NOT_WITH_SSO)
        if actor.user_id is None or not await users.has_2fa(conn, actor.user_id):
            raise Refused(400, NEEDS_PERSONAL_2FA)


async def current_run(conn: asyncpg.Connection, organization_id: int) -> asyncpg.Record | None:
    """The run under way, else the latest one."""
    return await conn.fetchrow(
        """select * from enforcement_runs where organization_id = $1
           order by status in ('queued', 'running') desc, id desc limit 1""",
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


# --- Reading runs ----------------------------------------------------------------------------


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


async def count_noncompliant(
    conn: asyncpg.Connection, organization_id: int, *, except_user_id: int | None
) -> int:
    """Active members without a second factor: who a run started now would remove."""
    return await conn.fetchval(
        f"""select count(*) from members m join users u on u.id = m.user_id
            where m.organization_id = $1 and u.id is distinct from $2 and not {HAS_2FA_SQL}""",
        organization_id,
        except_user_id,
    )


async def queue_reminders(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    context: dict[str, Any],
    day: str,
    except_user_id: int | None,
) -> int:
    """One `reminder_2fa` email (the same `context` for all, from
    `require2fa.email_contexts.reminder_2fa`) per active member without a second factor, at most
    once a day (the dedupe key names the day); returns how many were queued now."""
    key = "'reminder:' || m.organization_id || ':' || m.id || ':' || $3::text"
    result = await conn.execute(
        f"""insert into email_outbox (template, to_address, context, dedupe_key, message_id,
                                      organization_id, member_id)
            select 'reminder_2fa', m.email, $2::jsonb,
                   {key}, {MESSAGE_ID_SQL.format(key=key)}, m.organization_id, m.id
            from members m join users u on u.id = m.user_id
            where m.organization_id = $1 and u.id is distinct from $4 and not {HAS_2FA_SQL}
            order by m.id
            on conflict (dedupe_key) do nothing""",
        organization_id,
        context,
        day,
        except_user_id,
    )
    return int(result.split()[-1])


async def member_counts(conn: asyncpg.Connection, organization_id: int) -> asyncpg.Record:
    """members (active), enrolled (active with 2FA), pending (by reason)."""
    return await conn.fetchrow(
        f"""select count(*) filter (where m.user_id is not null) as active,
                   count(*) filter (where m.user_id is not null and {HAS_2FA_SQL}) as enrolled,
                   count(*) filter (where m.pending_reason = 'invite') as invited,
                   count(*) filter (where m.pending_reason = '2fa') as pending_2fa
            from members m left join users u on u.id = m.user_id
            where m.organization_id = $1""",
        organization_id,
    )


# --- The coordinator ---------------------------------------------------------------------------


async def plan(conn: asyncpg.Connection, run_id: int, *, batch_size: int) -> asyncpg.Record | None:
    """Cuts a queued run into batches of `batch_size` members (by id) and marks it running.

    In the caller's transaction. A run already planned is returned as it is; a cancelled or
    finished one gives None. One statement numbers the organization's members, so memory does not
    grow with the organization. Two coordinators of the same run take turns on an advisory lock;
    the run row itself is only locked by the final UPDATE, so that turning the requirement off
    does not wait for the planning of a large organization.
    """
    await conn.execute("select pg_advisory_xact_lock($1, $2)", PLAN_LOCK, run_id % 2**31)
    run = await conn.fetchrow("select * from enforcement_runs where id = $1", run_id)
    if run is None or run["status"] not in ACTIVE:
        return None
    if run["batches_total"] is not None:
        return run
    planned = await conn.fetchrow(
        """with numbered as (
               select id, (row_number() over (order by id) - 1) / $3 as batch_no
               from members where organization_id = $2),
           cut as (
               select batch_no, min(id) as first_id, max(id) as last_id, count(*) as members
               from numbered group by batch_no),
           written as (
               insert into enforcement_batches (run_id, batch_no, first_member_id, last_member_id)
               select $1, batch_no, first_id, last_id from cut
               on conflict do nothing)
           select count(*) as batches, coalesce(sum(members), 0) as members from cut""",
        run_id,
        run["organization_id"],
        batch_size,
    )
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


async def unsent_batches(conn: asyncpg.Connection, run_id: int) -> list[int]:
    """Batch numbers of the run not yet sent to the workers."""
    rows = await conn.fetch(
        """select batch_no from enforcement_batches
           where run_id = $1 and done_at is null and enqueued_at is null order by batch_no""",
        run_id,
    )
    return [row["batch_no"] for row in rows]


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


# --- One batch ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    member_id: int
    user_id: int
    email: str


@dataclass(frozen=True)
class BatchHead:
    """What a batch needs to know before it removes anyone; None from `start_batch` means there
    is nothing to do (done already, run cancelled or finished, requirement off)."""

    run_id: int
    batch_no: int
    organization_id: int
    org_name: str
    org_slug: str
    first_member_id: int
    last_member_id: int
    actor: Actor
    now: datetime


async def start_batch(conn: asyncpg.Connection, run_id: int, batch_no: int) -> BatchHead | None:
    """Takes the batch's locks (in the caller's transaction) and says whether it is to be done."""
    run = await conn.fetchrow("select organization_id from enforcement_runs where id = $1", run_id)
    if run is None:
        return None
    org = await conn.fetchrow(
        "select id, name, slug, require_2fa from organizations where id = $1 for share",
        run["organization_id"],
    )
    if org is None or not org["require_2fa"]:
        return None
    batch = await conn.fetchrow(
        """select * from enforcement_batches where run_id = $1 and batch_no = $2 for update""",
        run_id,
        batch_no,
    )
    if batch is None or batch["done_at"] is not None:
        return None
    # Read after the organization lock: a cancellation committed before it is seen here.
    run = await conn.fetchrow("select *, now() as now from enforcement_runs where id = $1", run_id)
    if run["status"] != "running":
        return None
    return BatchHead(
        run_id=run_id,
        batch_no=batch_no,
        organization_id=org["id"],
        org_name=org["name"],
        org_slug=org["slug"],
        first_member_id=batch["first_member_id"],
        last_member_id=batch["last_member_id"],
        actor=Actor(
            user_id=run["actor_user_id"],
            token_id=run["actor_token_id"],
            label=run["actor_label"],
            ip_address=str(run["actor_ip"]) if run["actor_ip"] is not None else None,
        ),
        now=run["now"],
    )


async def candidates(conn: asyncpg.Connection, head: BatchHead) -> list[Candidate]:
    """Active members of the batch without a second factor, as read before any lock: the
    removal statement checks each of them again."""
    rows = await conn.fetch(
        f"""select m.id, m.user_id, m.email from members m join users u on u.id = m.user_id
            where m.organization_id = $1 and m.id between $2 and $3
              and u.id is distinct from $4 and not {HAS_2FA_SQL}
            order by m.id""",
        head.organization_id,
        head.first_member_id,
        head.last_member_id,
        head.actor.user_id,
    )
    return [Candidate(row["id"], row["user_id"], row["email"]) for row in rows]


@dataclass(frozen=True)
class Removal:
    """Per candidate: its fresh rejoin token's hash (for the row), the outbox dedupe key, the
    Message-ID that goes with it and the email's context (`require2fa.email_contexts`)."""

    token_hashes: list[bytes]
    dedupe_keys: list[str]
    message_ids: list[str]
    contexts: list[dict[str, Any]]


async def remove(
    conn: asyncpg.Connection,
    head: BatchHead,
    found: Sequence[Candidate],
    removal: Removal,
    *,
    reinstate_by: datetime,
) -> tuple[int, int]:
    """Removes those candidates that are, in this statement, still active with the same user
    and still without a second factor; writes their `member.pending` entries and outbox rows.

    Returns (removed, members of the batch's range). Call with the candidates' users locked.
    """
    row = await conn.fetchrow(
        f"""with t as (
                select * from unnest($1::bigint[], $2::bigint[], $3::jsonb[], $4::bytea[],
                                     $5::text[], $6::text[])
                         as t(member_id, user_id, context, token_hash, dedupe_key, message_id)),
            removed as (
                update members m
                set user_id = null, pending_reason = '2fa', token_hash = t.token_hash,
                    reinstate_by = $9, removed_at = $10, removed_by_run = $7,
                    expiry_reminded_at = null
                from t
                where m.id = t.member_id and m.organization_id = $8 and m.user_id = t.user_id
                  and not {compliance.second_factor_sql("t.user_id")}
                returning m.id, m.email, m.role, t.user_id, t.context, t.dedupe_key,
                          t.message_id),
            logged as (
                insert into audit_log (organization_id, event, actor_user_id, actor_token_id,
                                       actor_label, target_member_id, target_user_id,
                                       ip_address, data, created_at)
                select $8, 'member.pending', $11, $12, $13, r.id, r.user_id, $14::inet,
                       jsonb_build_object(
                           'email', r.email, 'role', r.role, 'reason', '2fa',
                           'teams', coalesce((select jsonb_agg(tm.slug order by tm.slug)
                                              from member_teams mt
                                              join teams tm on tm.id = mt.team_id
                                              where mt.member_id = r.id), '[]'::jsonb)),
                       $10
                from removed r order by r.id),
            mailed as (
                insert into email_outbox (template, to_address, context, dedupe_key, message_id,
                                          organization_id, member_id, enforcement_id)
                select 'removed_for_2fa', r.email, r.context,
                       r.dedupe_key, r.message_id, $8, r.id, $7
                from removed r order by r.id
                on conflict (dedupe_key) do nothing)
            select (select count(*) from removed) as removed,
                   (select count(*) from members
                    where organization_id = $8 and id between $15 and $16) as in_range""",
        [c.member_id for c in found],
        [c.user_id for c in found],
        removal.contexts,
        removal.token_hashes,
        removal.dedupe_keys,
        removal.message_ids,
        head.run_id,
        head.organization_id,
        reinstate_by,
        head.now,
        head.actor.user_id,
        head.actor.token_id,
        head.actor.label,
        head.actor.ip_address,
        head.first_member_id,
        head.last_member_id,
    )
    return row["removed"], row["in_range"]


async def finish_batch(
    conn: asyncpg.Connection, head: BatchHead, *, removed: int, skipped: int, seconds: float
) -> asyncpg.Record:
    """Marks the batch done and adds to the run's counters; the last batch completes the run
    (total = removed + skipped). Returns the run. The last statement of the batch's
    transaction, so that the run row stays locked for as short a time as possible."""
    await conn.execute(
        """update enforcement_batches
           set done_at = clock_timestamp(), removed = $3, skipped = $4, seconds = $5
           where run_id = $1 and batch_no = $2""",
        head.run_id,
        head.batch_no,
        removed,
        skipped,
        seconds,
    )
    run = await conn.fetchrow(
        """update enforcement_runs
           set removed = removed + $2, skipped = skipped + $3, batches_done = batches_done + 1,
               updated_at = clock_timestamp(),
               status = case when batches_done + 1 >= batches_total
                             then 'completed' else status end,
               finished_at = case when batches_done + 1 >= batches_total
                                  then clock_timestamp() else finished_at end,
               total = case when batches_done + 1 >= batches_total
                            then removed + $2 + skipped + $3 else total end
           where id = $1 and status = 'running'
           returning *""",
        head.run_id,
        removed,
        skipped,
    )
    if run is None:  # cannot happen while the organization lock is held; never count twice
        raise RuntimeError(f"enforcement run {head.run_id} stopped running under batch")
    return run


# --- The sweeper -------------------------------------------------------------------------------


async def stalled(
    conn: asyncpg.Connection, *, stale_after: timedelta, max_resends: int = MAX_RESENDS
) -> tuple[list[int], list[tuple[int, int]]]:
    """What a crash or a lost message left behind: runs still queued, and batches of running runs
    that made no progress for `stale_after` (not done, not being removed right now).

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
           picked as (
               select b.run_id, b.batch_no
               from enforcement_batches b join stuck s on s.id = b.run_id
               where b.done_at is null
                 and (b.enqueued_at is null or b.enqueued_at < clock_timestamp() - $1::interval)
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
    )
    return [row["id"] for row in queued], [(row["run_id"], row["batch_no"]) for row in batches]


# --- Metrics -----------------------------------------------------------------------------------

BATCH_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


async def metrics(conn: asyncpg.Connection) -> dict[str, Any]:
    """Runs by status, members removed in total, and the batch-duration histogram."""
    by_status = await conn.fetch("select status, count(*) as n from enforcement_runs group by 1")
    removed = await conn.fetchval("select coalesce(sum(removed), 0) from enforcement_runs")
    buckets = ", ".join(
        f"count(*) filter (where seconds <= {bound})" for bound in BATCH_SECONDS_BUCKETS
    )
    row = await conn.fetchrow(
        f"""select {buckets}, count(*), coalesce(sum(seconds), 0)
            from enforcement_batches where seconds is not null"""
    )
    assert row is not None
    values = list(row.values())
    return {
        "runs": {status: 0 for status in STATUSES} | {r["status"]: r["n"] for r in by_status},
        "removed": int(removed),
        "batch_buckets": list(zip(BATCH_SECONDS_BUCKETS, values[:-2], strict=True)),
        "batch_count": values[-2],
        "batch_sum": float(values[-1]),
    }
