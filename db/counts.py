"""Compliance counts of an organization: who a run started now would remove (at its level), and
its members by 2FA state. The conditions are `require2fa.compliance`'s."""

from __future__ import annotations

import asyncpg

from db.users import HAS_2FA_SQL
from require2fa import compliance

# Does not meet the requirement at the level of the organization (alias `o`) and has no
# exemption that lasts (members `m`, users `u`); an AND term that plans as an anti-join.
NONCOMPLIANT_SQL = compliance.noncompliant_sql(
    "u.id", level_sql="o.require_2fa_level", exempt_until_sql="m.exempt_2fa_until"
)
# The same for the member's user at the level `$3` (members `m` only), for the count.
_NONCOMPLIANT_AT_LEVEL_SQL = compliance.noncompliant_sql(
    "m.user_id", level_sql="$3::text", exempt_until_sql="m.exempt_2fa_until"
)


async def count_noncompliant(
    conn: asyncpg.Connection,
    organization_id: int,
    *,
    except_user_id: int | None,
    level: str | None = None,
) -> int:
    """Active members who do not meet the requirement at the organization's level (or `level`,
    the one an owner is about to choose) and have no exemption that lasts: who a run started now
    would remove.

    Planned from the organization's members (the `(organization_id, id)` index) with a per-member
    anti-join on the factors' partial index, so it costs in proportion to this organization
    alone. The level is a parameter rather than a join, so that the level's kinds fold into
    constants and the probe stays index-only."""
    if level is None:
        level = await conn.fetchval(
            "select require_2fa_level from organizations where id = $1", organization_id
        )
    return await conn.fetchval(
        f"""select count(*) from members m
            where m.organization_id = $1 and m.user_id is not null
              and m.user_id is distinct from $2 and {_NONCOMPLIANT_AT_LEVEL_SQL}""",
        organization_id,
        except_user_id,
        compliance.level_of(level),
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
