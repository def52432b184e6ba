"""Making members pending or blocked for 2FA: the one statement behind every removal (a run's
batch, an owner's 2FA reset, an exemption lifted or lapsing), the one behind every block (a run's
batch with the action `block`), and the one that lets blocked members back in.

The member row keeps its role, teams and settings; the same statement writes each member's
`member.pending` entry (`db.audit.insert_sql`) and Mandatory email (`db.outbox.insert_sql`), in
the caller's transaction. The caller holds the locks in the order that `db.batches` documents
(organization FOR SHARE, then the candidates' users FOR UPDATE, then their member rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from db import audit, outbox
from db.audit import Actor
from require2fa import compliance


@dataclass(frozen=True)
class Candidate:
    """An active member who, read before the locks, does not meet the requirement."""

    member_id: int
    user_id: int
    email: str


@dataclass(frozen=True)
class Pending:
    """Per candidate (in the same order): its fresh rejoin token's hash, its Mandatory email's
    context (`require2fa.email_contexts`) and that email's dedupe key, from which the statement
    makes its Message-ID (`db.outbox.MESSAGE_ID_SQL`)."""

    token_hashes: list[bytes]
    contexts: list[dict[str, Any]]
    dedupe_keys: list[str]


# The member's reason: `2fa-level` for one whose factors are all of kinds that the level does
# not accept, else `2fa`. The audit entry says the event's own reason when it has one
# (`2fa-reset`), else the member's.
_STATEMENT = f"""
with t as (
    select * from unnest($1::bigint[], $2::bigint[], $3::jsonb[], $4::bytea[], $5::text[])
             as t(member_id, user_id, context, token_hash, dedupe_key)),
removed as (
    update members m
    set user_id = null, removed_user_id = m.user_id, pending_reason = '2fa',
        token_hash = t.token_hash,
        reinstate_by = $8, removed_at = $9, removed_by_run = $7,
        expiry_reminded_at = null, blocked_at = null, blocked_by_run = null,
        removal_reason = case when {compliance.second_factor_sql("t.user_id")}
                              then '2fa-level' else '2fa' end
    from t, organizations o
    where m.id = t.member_id and m.organization_id = $6 and m.user_id = t.user_id
      and m.id between $14 and $15 and o.id = $6
      and {compliance.in_scope_sql("m.id", "m.role", organization_id_sql="$6")}
      and {
    compliance.noncompliant_sql(
        "t.user_id",
        level_sql="$16::text",
        exempt_until_sql="m.exempt_2fa_until",
        idp_organization_sql="$6",
    )
}
    returning m.id, m.email, m.role, m.removal_reason, t.user_id, t.context, t.dedupe_key),
logged as (
    {
    audit.insert_sql(
        '''select $6, 'member.pending', $10, $11, $12, r.id, r.user_id, $13::inet,
           jsonb_build_object(
               'email', r.email, 'role', r.role,
               'reason', coalesce($17::text, r.removal_reason),
               'teams', coalesce((select jsonb_agg(tm.slug order by tm.slug)
                                  from member_teams mt
                                  join teams tm on tm.id = mt.team_id
                                  where mt.member_id = r.id), '[]'::jsonb)),
           $9
    from removed r order by r.id'''
    )
}),
mailed as (
    {
    outbox.insert_sql(
        "select 'removed_for_2fa', r.email, r.context, r.dedupe_key, "
        + outbox.MESSAGE_ID_SQL.format(key="r.dedupe_key")
        + ", $6, r.id, $7 from removed r order by r.id"
    )
})
select (select count(*) from removed) as removed,
       (select count(*) from members
        where organization_id = $6 and id between $14 and $15) as in_range
"""


async def make_pending(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    level: str,
    found: Sequence[Candidate],
    pending: Pending,
    actor: Actor,
    now: datetime,
    reinstate_by: datetime,
    member_range: tuple[int, int],
    run_id: int | None = None,
    event_reason: str | None = None,
) -> tuple[int, int]:
    """Makes pending those candidates that are, in this statement, still active with the same
    user, within `member_range` (first and last member id), still in the requirement's scope
    (a role or team changed since the candidates were read is seen here) and without a factor
    that `level` accepts nor an exemption that lasts; writes their `member.pending` entries
    (reason `event_reason`, else the member's) and their Mandatory emails (an email whose
    dedupe key is taken already is not queued again).

    Returns (made pending, members of the organization within `member_range`). Call with the
    candidates' users locked.
    """
    row = await conn.fetchrow(
        _STATEMENT,
        [c.member_id for c in found],
        [c.user_id for c in found],
        pending.contexts,
        pending.token_hashes,
        pending.dedupe_keys,
        organization_id,
        run_id,
        reinstate_by,
        now,
        actor.user_id,
        actor.token_id,
        actor.label,
        actor.ip_address,
        member_range[0],
        member_range[1],
        level,
        event_reason,
    )
    assert row is not None
    return row["removed"], row["in_range"]


# Blocked in place: the member keeps user, role, teams and settings; one `member.blocked` entry
# and one `blocked_for_2fa` email (its dedupe key given: `blocked:{run}:{member}` for a run's)
# each. A member blocked already (by an earlier run) is left as they are.
_BLOCK_STATEMENT = f"""
with t as (
    select * from unnest($1::bigint[], $2::bigint[], $14::text[])
             as t(member_id, user_id, dedupe_key)),
blocked as (
    update members m set blocked_at = $5, blocked_by_run = $4::bigint
    from t, organizations o
    where m.id = t.member_id and m.organization_id = $3 and m.user_id = t.user_id
      and m.id between $10 and $11 and m.blocked_at is null and o.id = $3
      and {compliance.in_scope_sql("m.id", "m.role", organization_id_sql="$3")}
      and {
    compliance.noncompliant_sql(
        "t.user_id",
        level_sql="$12::text",
        exempt_until_sql="m.exempt_2fa_until",
        idp_organization_sql="$3",
    )
}
    returning m.id, m.email, m.role, t.user_id, t.dedupe_key),
logged as (
    {
    audit.insert_sql(
        '''select $3, 'member.blocked', $6, $7, $8, b.id, b.user_id, $9::inet,
           jsonb_build_object('email', b.email, 'role', b.role, 'reason', '2fa'), $5
    from blocked b order by b.id'''
    )
}),
mailed as (
    {
    outbox.insert_sql(
        "select 'blocked_for_2fa', b.email,"
        " $13::jsonb || jsonb_build_object('member_email', b.email),"
        " b.dedupe_key, "
        + outbox.MESSAGE_ID_SQL.format(key="b.dedupe_key")
        + ", $3, b.id, $4::bigint from blocked b order by b.id"
    )
})
select (select count(*) from blocked) as blocked,
       (select count(*) from members
        where organization_id = $3 and id between $10 and $11) as in_range
"""


async def block(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    level: str,
    found: Sequence[Candidate],
    context: dict[str, Any],
    dedupe_keys: Sequence[str],
    actor: Actor,
    now: datetime,
    member_range: tuple[int, int],
    run_id: int | None,
) -> tuple[int, int]:
    """Blocks those candidates that are, in this statement, still active with the same user,
    within `member_range`, still in the requirement's scope, not blocked yet and without a
    factor that `level` accepts nor
    an exemption that lasts; writes their `member.blocked` entries and their "Action required"
    emails (`context` shared, each with its `member_email`; `dedupe_keys` in the order of
    `found`: a key taken already queues nothing).

    Returns (blocked, members of the organization within `member_range`). Call with the
    candidates' users locked, as `make_pending`."""
    row = await conn.fetchrow(
        _BLOCK_STATEMENT,
        [c.member_id for c in found],
        [c.user_id for c in found],
        organization_id,
        run_id,
        now,
        actor.user_id,
        actor.token_id,
        actor.label,
        actor.ip_address,
        member_range[0],
        member_range[1],
        level,
        context,
        list(dedupe_keys),
    )
    assert row is not None
    return row["blocked"], row["in_range"]


# Blocked members whom the requirement no longer holds: it is off, they are out of scope, or
# they meet it (a factor the level accepts, an exemption that lasts, their identity provider's
# MFA under `mfa: idp`). One `member.unblocked`
# entry each, with the reason. `$1`/`$2` choose the members: one user's, or one organization's.
_UNBLOCK_STATEMENT = f"""
with unblocked as (
    update members m set blocked_at = null, blocked_by_run = null
    from organizations o
    where o.id = m.organization_id and m.blocked_at is not null
      and ($1::bigint is null or m.user_id = $1) and ($2::bigint is null or m.organization_id = $2)
      and not (o.require_2fa
               and {compliance.in_scope_sql("m.id", "m.role")}
               and {
    compliance.noncompliant_sql(
        "m.user_id",
        level_sql="o.require_2fa_level",
        exempt_until_sql="m.exempt_2fa_until",
        idp_organization_sql="o.id",
    )
})
    returning m.id, m.organization_id, m.user_id, m.email,
              case when not o.require_2fa then 'requirement-off'
                   when not {compliance.in_scope_sql("m.id", "m.role")} then 'out-of-scope'
                   else '2fa' end as reason)
{
    audit.insert_sql(
        '''select u.organization_id, 'member.unblocked', $3, $4, $5, u.id, u.user_id, $6::inet,
           jsonb_build_object('email', u.email, 'reason', u.reason), now()
    from unblocked u order by u.id'''
    )
}
"""


async def unblock_released(
    conn: asyncpg.Connection,
    *,
    actor: Actor,
    user_id: int | None = None,
    organization_id: int | None = None,
) -> int:
    """Unblocks the blocked members (of `user_id`, or of `organization_id`) whom the requirement
    no longer holds, with a `member.unblocked` entry each (reason `2fa`: they meet it now;
    `out-of-scope`; `requirement-off`); how many. In the caller's transaction: the one that
    added the factor or changed the settings, so access comes back the moment it commits."""
    assert user_id is not None or organization_id is not None
    result = await conn.execute(
        _UNBLOCK_STATEMENT,
        user_id,
        organization_id,
        actor.user_id,
        actor.token_id,
        actor.label,
        actor.ip_address,
    )
    return int(result.split()[-1])
