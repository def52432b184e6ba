"""Making members pending for 2FA: the one statement behind every removal (a run's batch, an
owner's 2FA reset, an exemption lifted or lapsing).

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
        expiry_reminded_at = null,
        removal_reason = case when {compliance.second_factor_sql("t.user_id")}
                              then '2fa-level' else '2fa' end
    from t
    where m.id = t.member_id and m.organization_id = $6 and m.user_id = t.user_id
      and m.id between $14 and $15
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
    user, within `member_range` (first and last member id) and still without a second factor
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
