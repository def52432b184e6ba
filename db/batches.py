"""One batch of a run: the removal of the members of one id range who have no second factor
that the organization's level accepts.

Locks are always taken in the same order, so none of these can deadlock with another (the
switch, `require2fa.organization_settings`, takes the organization FOR UPDATE):

    organization (FOR SHARE by batches, FOR UPDATE by the switch)
    → batch row → users (FOR UPDATE in id order, as `db.users.lock`, which 2FA enrollment
    takes) → members → run row

A batch holds its organization FOR SHARE for its whole transaction, so turning the requirement
off waits for the batches in flight, and every batch that starts afterwards sees the run
cancelled and removes nobody.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from db.audit import Actor
from db.outbox import MESSAGE_ID_SQL
from require2fa import compliance


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
    level: str  # the organization's requirement level, read under its lock
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
        """select id, name, slug, require_2fa, require_2fa_level from organizations
           where id = $1 for share""",
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
        level=org["require_2fa_level"],
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
    """Active members of the batch without a second factor that the level accepts and without
    an exemption that lasts, with their users locked (FOR UPDATE, in id order: the lock of
    `db.users.lock`, which 2FA enrollment takes too, so that whoever commits first is seen by
    the other). Read before the lock was granted: the removal statement checks each again."""
    noncompliant = compliance.noncompliant_sql(
        "u.id", level_sql="$5::text", exempt_until_sql="m.exempt_2fa_until"
    )
    rows = await conn.fetch(
        f"""select m.id, m.user_id, m.email from members m join users u on u.id = m.user_id
            where m.organization_id = $1 and m.id between $2 and $3
              and u.id is distinct from $4 and {noncompliant}
            order by u.id
            for update of u""",
        head.organization_id,
        head.first_member_id,
        head.last_member_id,
        head.actor.user_id,
        head.level,
    )
    return [Candidate(row["id"], row["user_id"], row["email"]) for row in rows]


@dataclass(frozen=True)
class Removal:
    """Per candidate: its fresh rejoin token's hash (for the row) and the email's context
    (`require2fa.email_contexts`). The outbox row's dedupe key is `removed:{run}:{member}` and
    its Message-ID `db.outbox.message_id` of that key, both written by the statement."""

    token_hashes: list[bytes]
    contexts: list[dict[str, Any]]


_DEDUPE_KEY_SQL = "'removed:' || $5::bigint || ':' || r.id"


async def remove(
    conn: asyncpg.Connection,
    head: BatchHead,
    found: Sequence[Candidate],
    removal: Removal,
    *,
    reinstate_by: datetime,
) -> tuple[int, int]:
    """Removes those candidates that are, in this statement, still active with the same user
    and still without a second factor that the level accepts (reason `2fa`, or `2fa-level` for
    one whose factors are all of kinds the level does not accept); writes their
    `member.pending` entries and outbox rows.

    Returns (removed, members of the batch's range). Call with the candidates' users locked
    (`candidates` locks them).
    """
    row = await conn.fetchrow(
        f"""with t as (
                select * from unnest($1::bigint[], $2::bigint[], $3::jsonb[], $4::bytea[])
                         as t(member_id, user_id, context, token_hash)),
            removed as (
                update members m
                set user_id = null, removed_user_id = m.user_id, pending_reason = '2fa',
                    token_hash = t.token_hash,
                    reinstate_by = $7, removed_at = $8, removed_by_run = $5,
                    expiry_reminded_at = null,
                    removal_reason = case when {compliance.second_factor_sql("t.user_id")}
                                          then '2fa-level' else '2fa' end
                from t
                where m.id = t.member_id and m.organization_id = $6 and m.user_id = t.user_id
                  and m.id between $13 and $14
                  and {
            compliance.noncompliant_sql(
                "t.user_id", level_sql="$15::text", exempt_until_sql="m.exempt_2fa_until"
            )
        }
                returning m.id, m.email, m.role, m.removal_reason, t.user_id, t.context),
            logged as (
                insert into audit_log (organization_id, event, actor_user_id, actor_token_id,
                                       actor_label, target_member_id, target_user_id,
                                       ip_address, data, created_at)
                select $6, 'member.pending', $9, $10, $11, r.id, r.user_id, $12::inet,
                       jsonb_build_object(
                           'email', r.email, 'role', r.role, 'reason', r.removal_reason,
                           'teams', coalesce((select jsonb_agg(tm.slug order by tm.slug)
                                              from member_teams mt
                                              join teams tm on tm.id = mt.team_id
                                              where mt.member_id = r.id), '[]'::jsonb)),
                       $8
                from removed r order by r.id),
            mailed as (
                insert into email_outbox (template, to_address, context, dedupe_key, message_id,
                                          organization_id, member_id, enforcement_id)
                select 'removed_for_2fa', r.email, r.context,
                       k.key, {MESSAGE_ID_SQL.format(key="k.key")}, $6, r.id, $5
                from removed r cross join lateral (select {_DEDUPE_KEY_SQL} as key) k
                order by r.id
                on conflict (dedupe_key) do nothing)
            select (select count(*) from removed) as removed,
                   (select count(*) from members
                    where organization_id = $6 and id between $13 and $14) as in_range""",
        [c.member_id for c in found],
        [c.user_id for c in found],
        removal.contexts,
        removal.token_hashes,
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
        head.level,
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
