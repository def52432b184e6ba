"""Members: active (user set) or pending (invited, or removed for having no second factor)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from db.audit import Actor
from require2fa import compliance

# Whether the member's user has a second factor, and one that the organization's level accepts:
# per-row probes of the partial index (a page costs the same whatever other organizations hold).
HAS_2FA_SQL = compliance.second_factor_probe_sql("u.id")


def meets_level_sql(user: str, org: str) -> str:
    """Whether user `user` (an id column) has a second factor that organization `org` (an alias
    of an organizations row) accepts at its level: meeting the level counts a lasting assertion
    of the organization's identity provider too (`mfa: idp`), per member: one probe of
    `sso_identities_user`."""
    level = f"{org}.require_2fa_level"
    return (
        f"({compliance.second_factor_probe_sql(user, level_sql=level)}"
        f" or {compliance.idp_mfa_sql(user, f'{org}.id', level_sql=level)})"
    )


def team_slugs_sql(member: str) -> str:
    """The slugs of member `member`'s teams (an id column), in order; `{}` for none."""
    return f"""coalesce((select array_agg(t.slug order by t.slug) from member_teams mt
                         join teams t on t.id = mt.team_id where mt.member_id = {member}),
                        '{{}}')"""


MEETS_LEVEL_SQL = meets_level_sql("u.id", "o")
EXEMPT_SQL = "coalesce(m.exempt_2fa_until > now(), false)"  # an exemption that lasts now

# One member row as the API shows it: joined with its user, its 2FA state (any factor, and one
# that meets the organization's level) and its team slugs.
_SELECT = f"""
    select m.*, u.name as user_name, u.email as user_email,
           case when u.id is null then null else {HAS_2FA_SQL} end as has2fa,
           {EXEMPT_SQL} as exempt_2fa,
           case when u.id is null then null else {MEETS_LEVEL_SQL} end as meets_level,
           o.require_2fa_level, o.sso_mfa,
           sso.last_sign_in_at as sso_last_sign_in_at, sso.amr as sso_amr, sso.acr as sso_acr,
           {team_slugs_sql("m.id")} as team_slugs,
           m.blocked_at is not null as blocked
    """
_FROM = """
    from members m
         -- Looked up per member (a lateral subquery kept apart by `offset 0`), so that the plan
         -- keeps the members index's order: a hash join with the one organization row gave up
         -- that order, and a filtered page then read and sorted every member of the organization.
         cross join lateral (select * from organizations o
                              where o.id = m.organization_id offset 0) o
         left join users u on u.id = m.user_id
         -- The member's latest sign-in through the organization's identity provider (its
         -- current issuer), when linked.
         left join lateral (select si.last_sign_in_at, si.amr, si.acr
                              from sso_configs sc join sso_identities si
                                on si.organization_id = sc.organization_id
                               and si.issuer = sc.issuer
                             where sc.organization_id = m.organization_id and si.user_id = u.id
                             order by si.last_sign_in_at desc limit 1) sso on true
"""
_SELECT += _FROM


@dataclass(frozen=True)
class MemberFilter:
    """What `?query=` can ask for: `has2fa:true|false`, `is:pending|active|exempt`, `role:X`,
    text.

    `has2fa` speaks of members with a user; pending members have none and match neither value.
    `meets_level` (no query key: the compliance list) is `has2fa` at the organization's level.
    """

    has2fa: bool | None = None
    meets_level: bool | None = None
    pending: bool | None = None
    role: str | None = None
    text: str | None = None
    exempt: bool | None = None  # an exemption that lasts now
    blocked: bool | None = None  # blocked in place (`is:blocked`)
    in_scope: bool | None = None  # in the organization's `require2FAScope` (no query key)


# Who a run started now would remove: active, in scope, no second factor that the
# organization's level accepts, no exemption that lasts.
NONCOMPLIANT = MemberFilter(meets_level=False, pending=False, exempt=False, in_scope=True)
IN_SCOPE_SQL = compliance.in_scope_sql("m.id", "m.role")


async def get(
    conn: asyncpg.Connection, organization_id: int, member_id: int
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        _SELECT + " where m.organization_id = $1 and m.id = $2", organization_id, member_id
    )


async def of_user(
    conn: asyncpg.Connection, organization_id: int, user_id: int
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        _SELECT + " where m.organization_id = $1 and m.user_id = $2", organization_id, user_id
    )


def _filter_sql(first: int) -> str:
    """The conditions of a `MemberFilter`, on parameters `$first` … `$first+7` (`_filter_args`)."""
    n = [f"${first + i}" for i in range(8)]
    return f"""
          and ({n[0]}::boolean is null or (u.id is not null and {HAS_2FA_SQL} = {n[0]}))
          and ({n[1]}::boolean is null or (m.user_id is null) = {n[1]})
          and ({n[2]}::text is null or m.role = {n[2]})
          and ({n[3]}::text is null or m.email like '%' || {n[3]} || '%'
               or coalesce(u.name, '') ilike '%' || {n[3]} || '%')
          and ({n[4]}::boolean is null or {EXEMPT_SQL} = {n[4]})
          and ({n[5]}::boolean is null or (u.id is not null and {MEETS_LEVEL_SQL} = {n[5]}))
          and ({n[6]}::boolean is null or (m.blocked_at is not null) = {n[6]})
          and ({n[7]}::boolean is null or {IN_SCOPE_SQL} = {n[7]})"""


def _filter_args(where: MemberFilter) -> tuple[Any, ...]:
    return (
        where.has2fa,
        where.pending,
        where.role,
        where.text,
        where.exempt,
        where.meets_level,
        where.blocked,
        where.in_scope,
    )


# Written so that only the `(organization_id, id)` index gives the order: the organization is
# bounded by a row comparison (where the cursor starts) and `<=` rather than an equality, so the
# planner cannot order by the primary key and filter on the organization, which reads every
# row of the organizations with smaller ids (a 100k-member organization beside a 1M one).
_PAGE_AFTER_SQL = (
    _SELECT
    + """
        where (m.organization_id, m.id) > ($1, coalesce($2::bigint, 0))
          and m.organization_id <= $1"""
    + _filter_sql(4)
    + """
        order by m.organization_id, m.id
        limit $3"""
)
# The page before a cursor: the same, walking the index backwards.
_PAGE_BEFORE_SQL = (
    _SELECT
    + """
        where (m.organization_id, m.id) < ($1, $2::bigint)
          and m.organization_id >= $1"""
    + _filter_sql(4)
    + """
        order by m.organization_id desc, m.id desc
        limit $3"""
)
_COUNT_SQL = "select count(*)" + _FROM + " where m.organization_id = $1" + _filter_sql(2)


async def page(
    conn: asyncpg.Connection,
    organization_id: int,
    *,
    where: MemberFilter,
    after_id: int | None,
    limit: int,
    before_id: int | None = None,
) -> list[asyncpg.Record]:
    """Members in id order after `after_id` (keyset), or the `limit` just before `before_id`
    (still in id order), filtered."""
    if before_id is not None:
        rows = await conn.fetch(
            _PAGE_BEFORE_SQL, organization_id, before_id, limit, *_filter_args(where)
        )
        return rows[::-1]
    return await conn.fetch(_PAGE_AFTER_SQL, organization_id, after_id, limit, *_filter_args(where))


async def count(conn: asyncpg.Connection, organization_id: int, *, where: MemberFilter) -> int:
    """How many of the organization's members `where` selects."""
    return await conn.fetchval(_COUNT_SQL, organization_id, *_filter_args(where))


async def resendable(conn: asyncpg.Connection, organization_id: int) -> list[asyncpg.Record]:
    """The organization's pending members whose link has not expired, locked, by id."""
    return await conn.fetch(
        """select m.* from members m
           where m.organization_id = $1 and m.user_id is null
             and (m.reinstate_by is null or m.reinstate_by > now())
           order by m.id for update""",
        organization_id,
    )


async def set_token_hashes(
    conn: asyncpg.Connection, member_ids: list[int], hashes: list[bytes]
) -> None:
    """`set_token_hash` of many members, in one statement."""
    await conn.execute(
        """update members m set token_hash = t.hash
           from unnest($1::bigint[], $2::bytea[]) as t(id, hash) where m.id = t.id""",
        member_ids,
        hashes,
    )


async def insert_pending(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    email: str,
    role: str,
    token_hash: bytes,
    invited_by: int | None,
) -> int | None:
    """An invitation; None when that email is already a member or invited."""
    return await conn.fetchval(
        """insert into members (organization_id, email, role, token_hash, pending_reason,
                                invited_by)
           values ($1, $2, $3, $4, 'invite', $5)
           on conflict do nothing returning id""",
        organization_id,
        email.lower(),
        role,
        token_hash,
        invited_by,
    )


async def insert_active(
    conn: asyncpg.Connection, *, organization_id: int, user_id: int, email: str, role: str
) -> int:
    return await conn.fetchval(
        """insert into members (organization_id, user_id, email, role)
           values ($1, $2, $3, $4) returning id""",
        organization_id,
        user_id,
        email.lower(),
        role,
    )


async def set_teams(conn: asyncpg.Connection, member_id: int, team_ids: list[int]) -> None:
    await conn.execute(
        "delete from member_teams where member_id = $1 and team_id <> all($2::bigint[])",
        member_id,
        team_ids,
    )
    await conn.execute(
        """insert into member_teams (member_id, team_id) select $1, unnest($2::bigint[])
           on conflict do nothing""",
        member_id,
        team_ids,
    )


async def update(
    conn: asyncpg.Connection,
    member_id: int,
    *,
    role: str | None = None,
    settings: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        """update members set role = coalesce($2, role), settings = coalesce($3, settings)
           where id = $1""",
        member_id,
        role,
        settings,
    )


async def delete(conn: asyncpg.Connection, member_id: int) -> None:
    await conn.execute("delete from members where id = $1", member_id)


async def lock_owners(conn: asyncpg.Connection, organization_id: int) -> int:
    """Locks the active owners and counts them: two owners demoting each other at once are
    serialized, and the second sees that only one is left."""
    return await conn.fetchval(
        """select count(*) from (select 1 from members
           where organization_id = $1 and role = 'owner' and user_id is not null
           for update) as owners""",
        organization_id,
    )


async def lock(conn: asyncpg.Connection, member_id: int) -> None:
    await conn.execute("select 1 from members where id = $1 for update", member_id)


async def for_accept(conn: asyncpg.Connection, member_id: int) -> asyncpg.Record | None:
    """The pending member behind an invite link, locked, with its organization (its
    requirement and the requirement's scope) and its team slugs."""
    return await conn.fetchrow(
        """select m.*, o.slug as org_slug, o.name as org_name, o.require_2fa,
                  o.require_2fa_level, o.require_2fa_scope_roles, o.require_2fa_scope_teams,
                  coalesce((select array_agg(t.slug) from member_teams mt
                            join teams t on t.id = mt.team_id where mt.member_id = m.id),
                           '{}') as team_slugs
           from members m join organizations o on o.id = m.organization_id
           where m.id = $1 for update of m""",
        member_id,
    )


async def reinstate(conn: asyncpg.Connection, member_id: int, *, user_id: int, email: str) -> None:
    """Give a pending member its user back; role, teams and settings are the row's own."""
    await conn.execute(
        """update members set user_id = $2, email = $3, pending_reason = null, token_hash = null,
                              reinstate_by = null, removed_at = null, removed_by_run = null,
                              expiry_reminded_at = null, removal_reason = null,
                              removed_user_id = null
           where id = $1""",
        member_id,
        user_id,
        email.lower(),
    )


def is_expired(member: asyncpg.Record, now: datetime) -> bool:
    return member["reinstate_by"] is not None and member["reinstate_by"] <= now


async def other_organizations(conn: asyncpg.Connection, user_id: int, organization_id: int) -> int:
    """How many organizations other than `organization_id` the user is a member of: active, or
    pending after a removal for 2FA (their factors are what lets them back in there)."""
    return await conn.fetchval(
        """select count(distinct organization_id) from members
           where (user_id = $1 or removed_user_id = $1) and organization_id <> $2""",
        user_id,
        organization_id,
    )


async def set_exemption(
    conn: asyncpg.Connection,
    member_id: int,
    *,
    until: datetime | None,
    reason: str | None,
    by: Actor | None,
) -> None:
    """Sets (or, `until` None, clears) the member's exemption from the requirement."""
    await conn.execute(
        """update members set exempt_2fa_until = $2, exempt_2fa_reason = $3,
                              exempt_2fa_by = $4, exempt_2fa_by_label = $5
           where id = $1""",
        member_id,
        until,
        reason if until is not None else None,
        by.user_id if by is not None and until is not None else None,
        by.label if by is not None and until is not None else "",
    )


async def lapsed_exemptions(conn: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    """Members whose exemption has ended (on the partial index `members_exempt_2fa`), soonest
    first; not locked (the caller locks each in the usual order)."""
    return await conn.fetch(
        """select id, organization_id, user_id, exempt_2fa_until from members
           where exempt_2fa_until is not null and exempt_2fa_until <= now()
           order by exempt_2fa_until limit $1""",
        limit,
    )


async def set_token_hash(conn: asyncpg.Connection, member_id: int, token_hash: bytes) -> None:
    """A fresh link for a pending member: the old one stops working."""
    await conn.execute("update members set token_hash = $2 where id = $1", member_id, token_hash)


async def removed_for_2fa_of(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    """The pending memberships the user was removed from for 2FA, with the organization's name
    and slug, soonest deadline first."""
    return await conn.fetch(
        """select m.id, m.pending_reason, m.reinstate_by, m.removed_at, m.email,
                  o.name as org_name, o.slug as org_slug, o.require_2fa_level
           from members m join organizations o on o.id = m.organization_id
           where m.removed_user_id = $1 and m.user_id is null
             and (m.reinstate_by is null or m.reinstate_by > now())
           order by m.reinstate_by nulls last, m.id""",
        user_id,
    )
