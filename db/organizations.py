"""Organizations and teams."""

from __future__ import annotations

import asyncpg


async def create(conn: asyncpg.Connection, *, slug: str, name: str) -> asyncpg.Record | None:
    """Insert an organization; None when the slug is taken."""
    return await conn.fetchrow(
        """insert into organizations (slug, name) values ($1, $2)
           on conflict (slug) do nothing returning *""",
        slug,
        name,
    )


async def by_slug(conn: asyncpg.Connection, slug: str) -> asyncpg.Record | None:
    return await conn.fetchrow("select * from organizations where slug = $1", slug)


async def for_user(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """select o.*, m.role from organizations o join members m on m.organization_id = o.id
           where m.user_id = $1 order by o.name""",
        user_id,
    )


async def blocked_for_user(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    """The organizations that block the user in place for 2FA (`members.blocked_at`), by name."""
    return await conn.fetch(
        """select o.name as org_name, o.slug as org_slug, o.require_2fa_level, m.email,
                  m.blocked_at
           from members m join organizations o on o.id = m.organization_id
           where m.user_id = $1 and m.blocked_at is not null order by o.name""",
        user_id,
    )


async def create_team(
    conn: asyncpg.Connection, *, organization_id: int, slug: str, name: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """insert into teams (organization_id, slug, name) values ($1, $2, $3)
           on conflict (organization_id, slug) do nothing returning *""",
        organization_id,
        slug,
        name,
    )


async def teams(conn: asyncpg.Connection, organization_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """select t.*, (select count(*) from member_teams mt join members m on m.id = mt.member_id
                         where mt.team_id = t.id and m.user_id is not null) as member_count
           from teams t where t.organization_id = $1 order by t.slug""",
        organization_id,
    )


async def team_ids(
    conn: asyncpg.Connection, organization_id: int, slugs: list[str]
) -> dict[str, int]:
    rows = await conn.fetch(
        "select slug, id from teams where organization_id = $1 and slug = any($2::text[])",
        organization_id,
        slugs,
    )
    return {row["slug"]: row["id"] for row in rows}


async def get(conn: asyncpg.Connection, organization_id: int) -> asyncpg.Record:
    row = await conn.fetchrow("select * from organizations where id = $1", organization_id)
    assert row is not None
    return row


async def lock(conn: asyncpg.Connection, organization_id: int) -> asyncpg.Record | None:
    """The organization, locked FOR UPDATE (the switch; batches take it FOR SHARE)."""
    return await conn.fetchrow(
        "select * from organizations where id = $1 for update", organization_id
    )


async def update_settings(
    conn: asyncpg.Connection,
    organization_id: int,
    *,
    name: str | None,
    sso_enabled: bool,
    require_2fa: bool,
    level: str,
    scope: tuple[list[str] | None, list[str] | None] | None = None,
    action: str | None = None,
) -> asyncpg.Record:
    """Sets the name (when given), SSO, the requirement and its level, and (when given) its
    scope (roles, team slugs; None for none) and action; the row as it is now."""
    row = await conn.fetchrow(
        """update organizations set name = coalesce($2, name), sso_enabled = $3,
                                    require_2fa = $4, require_2fa_level = $5,
                                    require_2fa_scope_roles = case when $6 then $7::text[]
                                        else require_2fa_scope_roles end,
                                    require_2fa_scope_teams = case when $6 then $8::text[]
                                        else require_2fa_scope_teams end,
                                    require_2fa_action = coalesce($9, require_2fa_action)
           where id = $1 returning *""",
        organization_id,
        name,
        sso_enabled,
        require_2fa,
        level,
        scope is not None,
        scope[0] if scope else None,
        scope[1] if scope else None,
        action,
    )
    assert row is not None
    return row
