"""Compliance counts of an organization: who a run started now would remove (at its level), and
its members by 2FA state. The conditions are `require2fa.compliance`'s."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from db.users import HAS_2FA_SQL
from require2fa import compliance

# Does not meet the requirement at the level of the organization (alias `o`) and has no
# exemption that lasts (members `m`, users `u`); an AND term that plans as an anti-join.
NONCOMPLIANT_SQL = compliance.noncompliant_sql(
    "u.id",
    level_sql="o.require_2fa_level",
    exempt_until_sql="m.exempt_2fa_until",
    idp_organization_sql="o.id",
)

# A scope: roles and team slugs (None or empty: none of them; both: everyone).
Scope = tuple[Sequence[str] | None, Sequence[str] | None]

# In the scope whose roles and teams are `$4` and `$5` (members `m` of the organization `$1`).
IN_SCOPE_SQL = compliance.in_scope_sql(
    "m.id", "m.role", roles_sql="$4::text[]", teams_sql="$5::text[]", organization_id_sql="$1"
)


async def _scope_of(conn: asyncpg.Connection, organization_id: int) -> Scope:
    row = await conn.fetchrow(
        """select require_2fa_scope_roles, require_2fa_scope_teams from organizations
           where id = $1""",
        organization_id,
    )
    return (row["require_2fa_scope_roles"], row["require_2fa_scope_teams"]) if row else (None, None)


# Who a run started now would remove, from the maintained counts (migration 0150): the active
# members whose factor mask meets none of the level's kinds (a sum over the organization's rows
# of `member_factor_counts`, one per mask and writer slot), less those of them whose exemption
# still runs (the organization's few exempt members, on `members_org_exempt`), less the caller
# when they are one of them. One statement, so the three parts are read from one snapshot.
_COUNT_NONCOMPLIANT_SQL = f"""
with o as (
    select g.id, {compliance.level_bits_sql("l.level")} as bits
      from organizations g
     cross join lateral (select coalesce($3::text, g.require_2fa_level) as level) l
     where g.id = $1
)
select (select coalesce(sum(c.members), 0)::bigint
          from o join member_factor_counts c on c.organization_id = o.id
         where c.factor_mask & o.bits = 0)
     - (select count(*)
          from o join members m on m.organization_id = o.id
          join users u on u.id = m.user_id
         where m.exempt_2fa_until > now() and m.user_id is not null
           and u.factor_mask & o.bits = 0)
     - (select count(*)
          from o join members m on m.organization_id = o.id
          join users u on u.id = m.user_id
         where m.user_id = $2 and not coalesce(m.exempt_2fa_until > now(), false)
           and u.factor_mask & o.bits = 0)
"""


async def count_noncompliant(
    conn: asyncpg.Connection,
    organization_id: int,
    *,
    except_user_id: int | None,
    level: str | None = None,
    scope: Scope | None = None,
) -> int:
    """Active members in scope who do not meet the requirement at the organization's level (or
    `level`, and `scope` (roles, team slugs), the ones an owner is about to choose) and have no
    exemption that lasts: who a run started now would remove. `except_user_id` (the owner
    asking) is left out.

    Read from the counts that the triggers of migration 0150 keep in the transactions that change
    factors and memberships, so it costs the same at 1M members as at 10: a few counter rows and
    the organization's exempt members. `count_noncompliant_directly` is the same figure counted
    member by member (the tests compare the two); an organization whose identity provider's MFA
    counts (`sso_mfa = 'idp'`) is counted that way, since the maintained counts know only
    factors, and so is one with a scope (`require2FAScope`), which the counts per factor mask
    cannot tell apart."""
    if scope is None:
        scope = await _scope_of(conn, organization_id)
    if (
        scope[0]
        or scope[1]
        or await conn.fetchval(
            "select sso_mfa = 'idp' from organizations where id = $1", organization_id
        )
    ):
        return await count_noncompliant_directly(
            conn, organization_id, except_user_id=except_user_id, level=level, scope=scope
        )
    return await conn.fetchval(
        _COUNT_NONCOMPLIANT_SQL,
        organization_id,
        except_user_id,
        None if level is None else compliance.level_of(level),
    )


# The same for the member's user at the level `$3` (members `m` only), for the direct count.
_NONCOMPLIANT_AT_LEVEL_SQL = compliance.noncompliant_sql(
    "m.user_id",
    level_sql="$3::text",
    exempt_until_sql="m.exempt_2fa_until",
    idp_organization_sql="$1",
)


async def count_noncompliant_directly(
    conn: asyncpg.Connection,
    organization_id: int,
    *,
    except_user_id: int | None,
    level: str | None = None,
    scope: Scope | None = None,
) -> int:
    """`count_noncompliant`, counted from the members and their factors with
    `require2fa.compliance`'s conditions (the scope's included): the definition that the
    maintained count must equal.

    Planned from the organization's members (the `(organization_id, id)` index), or with a
    scope from the scope's members, with a per-member anti-join on the factors' partial index,
    so it costs in proportion to this organization (its scope)."""
    if level is None:
        level = await conn.fetchval(
            "select require_2fa_level from organizations where id = $1", organization_id
        )
    if scope is None:
        scope = await _scope_of(conn, organization_id)
    roles, teams = list(scope[0] or []) or None, list(scope[1] or []) or None
    if roles is None and teams is None:
        return await conn.fetchval(
            _COUNT_DIRECTLY_SQL, organization_id, except_user_id, compliance.level_of(level)
        )
    return await conn.fetchval(
        _COUNT_SCOPE_DIRECTLY_SQL,
        organization_id,
        except_user_id,
        compliance.level_of(level),
        roles,
        teams,
    )


_COUNT_DIRECTLY_SQL = f"""
select count(*) from members m
where m.organization_id = $1 and m.user_id is not null
  and m.user_id is distinct from $2 and {_NONCOMPLIANT_AT_LEVEL_SQL}"""

# With a scope: from its members (`compliance.scope_members_sql`, the teams' members read from
# `member_teams_team`), not from every member of the organization.
_COUNT_SCOPE_DIRECTLY_SQL = f"""
select count(*) from members m
where m.id in ({
    compliance.scope_members_sql("$1::bigint", roles_sql="$4::text[]", teams_sql="$5::text[]")
})
  and m.organization_id = $1 and m.user_id is not null
  and m.user_id is distinct from $2 and {_NONCOMPLIANT_AT_LEVEL_SQL}"""


async def first_noncompliant(
    conn: asyncpg.Connection,
    organization_id: int,
    *,
    except_user_id: int | None,
    level: str,
    scope: Scope,
    limit: int,
) -> list[asyncpg.Record]:
    """The first `limit` members (by id) that `count_noncompliant_directly` counts at `level` and
    in `scope`, which may be other than the organization's (what a change being confirmed would
    ask): id, user_id, email, role, user_name."""
    return await conn.fetch(
        f"""select m.id, m.user_id, m.email, m.role, u.name as user_name
            from members m join users u on u.id = m.user_id
            where m.organization_id = $1 and m.user_id is distinct from $2
              and {_NONCOMPLIANT_AT_LEVEL_SQL} and {IN_SCOPE_SQL}
            order by m.id limit $6""",
        organization_id,
        except_user_id,
        compliance.level_of(level),
        list(scope[0] or []) or None,
        list(scope[1] or []) or None,
        limit,
    )


async def member_counts(conn: asyncpg.Connection, organization_id: int) -> asyncpg.Record:
    """members (active), enrolled (active with 2FA), exempt (active, exemption lasting),
    pending (by reason)."""
    return await conn.fetchrow(
        f"""select count(*) filter (where m.user_id is not null) as active,
                   count(*) filter (where m.user_id is not null and {HAS_2FA_SQL}) as enrolled,
                   count(*) filter (where m.user_id is not null
                                      and m.exempt_2fa_until > now()) as exempt,
                   count(*) filter (where m.pending_reason = 'invite') as invited,
                   count(*) filter (where m.pending_reason = '2fa') as pending_2fa
            from members m left join users u on u.id = m.user_id
            where m.organization_id = $1""",
        organization_id,
    )
