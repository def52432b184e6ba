"""One batch of a run: the removal of the members of one id range (of a scoped run: the
scope's members that the batch lists) who have no second factor that the organization's level
accepts (the removal itself is `db.removals.make_pending`, which every other way of making a
member pending shares, under the same lock order).

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

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from db.audit import Actor
from db.removals import Candidate
from require2fa import compliance


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
    action: str  # what the run does to a candidate: `remove` or `block`
    scope_roles: list[str] | None  # the scope (`require2fa.compliance.in_scope_sql`)
    scope_teams: list[str] | None
    sso_idp: bool  # its identity provider's MFA counts (single sign-on with `mfa: idp`)
    first_member_id: int
    last_member_id: int
    member_ids: list[int] | None  # a scoped run's batch: its members (None: the whole range)
    actor: Actor
    now: datetime

    def covered(self, in_range: int) -> int:
        """The members this batch accounts for (acted on or skipped): those it lists, else the
        `in_range` members now in its id range."""
        return len(self.member_ids) if self.member_ids is not None else in_range


async def start_batch(conn: asyncpg.Connection, run_id: int, batch_no: int) -> BatchHead | None:
    """Takes the batch's locks (in the caller's transaction) and says whether it is to be done.
    Two statements: the organization FOR SHARE (found through the run), then the batch FOR
    UPDATE with the run read beside it, in a statement of its own so that its snapshot is taken
    after the organization lock was granted: a cancellation committed before it is seen."""
    org = await conn.fetchrow(
        """select o.id, o.name, o.slug, o.require_2fa, o.require_2fa_level, o.require_2fa_action,
                  o.require_2fa_scope_roles, o.require_2fa_scope_teams, o.sso_mfa
           from enforcement_runs r join organizations o on o.id = r.organization_id
           where r.id = $1
           for share of o""",
        run_id,
    )
    if org is None or not org["require_2fa"]:
        return None
    batch = await conn.fetchrow(
        """select b.first_member_id, b.last_member_id, b.member_ids, b.done_at, r.status,
                  r.actor_user_id, r.actor_token_id, r.actor_label, r.actor_ip, now() as now
           from enforcement_batches b join enforcement_runs r on r.id = b.run_id
           where b.run_id = $1 and b.batch_no = $2
           for update of b""",
        run_id,
        batch_no,
    )
    if batch is None or batch["done_at"] is not None or batch["status"] != "running":
        return None
    return BatchHead(
        run_id=run_id,
        batch_no=batch_no,
        organization_id=org["id"],
        org_name=org["name"],
        org_slug=org["slug"],
        level=org["require_2fa_level"],
        action=org["require_2fa_action"],
        scope_roles=org["require_2fa_scope_roles"],
        scope_teams=org["require_2fa_scope_teams"],
        sso_idp=org["sso_mfa"] == "idp",
        first_member_id=batch["first_member_id"],
        last_member_id=batch["last_member_id"],
        member_ids=batch["member_ids"],
        actor=Actor(
            user_id=batch["actor_user_id"],
            token_id=batch["actor_token_id"],
            label=batch["actor_label"],
            ip_address=str(batch["actor_ip"]) if batch["actor_ip"] is not None else None,
        ),
        now=batch["now"],
    )


async def candidates(conn: asyncpg.Connection, head: BatchHead) -> list[Candidate]:
    """Active members of the batch (its id range, or the members it lists) in the
    organization's scope, without a second factor that the level accepts and without an
    exemption that lasts (and, to block, not blocked yet), with their users locked (FOR UPDATE,
    in id order: the lock of `db.users.lock`, which 2FA enrollment takes too, so that whoever
    commits first is seen by the other). Read before the lock was granted:
    `db.removals.make_pending` (or `block`) checks each again."""
    listed = head.member_ids is not None
    rows = await conn.fetch(
        _CANDIDATES_LISTED_SQL if listed else _CANDIDATES_SQL,
        head.organization_id,
        head.first_member_id,
        head.last_member_id,
        head.actor.user_id,
        head.level,
        head.scope_roles,
        head.scope_teams,
        head.action,
        *([head.member_ids] if listed else []),
    )
    return [Candidate(row["id"], row["user_id"], row["email"]) for row in rows]


def _candidates_sql(*, listed: bool) -> str:
    noncompliant = compliance.noncompliant_sql(
        "u.id",
        level_sql="$5::text",
        exempt_until_sql="m.exempt_2fa_until",
        idp_organization_sql="$1",
    )
    in_scope = compliance.in_scope_sql(
        "m.id",
        "m.role",
        roles_sql="$6::text[]",
        teams_sql="$7::text[]",
        organization_id_sql="$1",
    )
    members = "m.id between $2 and $3" + (" and m.id = any($9::bigint[])" if listed else "")
    return f"""select m.id, m.user_id, m.email from members m join users u on u.id = m.user_id
        where m.organization_id = $1 and {members}
          and u.id is distinct from $4 and {noncompliant} and {in_scope}
          and ($8 <> 'block' or m.blocked_at is null)
        order by u.id
        for update of u"""


_CANDIDATES_SQL = _candidates_sql(listed=False)
# A scoped run's batch: only the members it lists (their ids in `$9`, within `$2`..`$3`),
# each judged in scope again (a probe of `member_teams`'s primary key).
_CANDIDATES_LISTED_SQL = _candidates_sql(listed=True)


async def finish_batch(
    conn: asyncpg.Connection, head: BatchHead, *, removed: int, skipped: int, seconds: float
) -> asyncpg.Record:
    """Marks the batch done and adds to the run's counters; the last batch completes the run
    (total = removed + skipped). Returns the run. One statement, the last of the batch's
    transaction, so that the run row stays locked for as short a time as possible."""
    run = await conn.fetchrow(
        """with batch as (
               update enforcement_batches
               set done_at = clock_timestamp(), removed = $2, skipped = $3, seconds = $4
               where run_id = $1 and batch_no = $5)
           update enforcement_runs
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
        seconds,
        head.batch_no,
    )
    if run is None:  # cannot happen while the organization lock is held; never count twice
        raise RuntimeError(f"enforcement run {head.run_id} stopped running under batch")
    return run
