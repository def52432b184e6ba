"""The caller, the organization a request names and the caller's membership of it, in one
statement (what `api.auth` and `api.access` decide from; the decision itself is theirs).

Each statement answers one row, or none when the credential is unknown: the user's columns
(`users.*` and `has2fa`, as `db.users.by_id`; with a token, its id), then the organization's
(`select *`, as `db.organizations.by_slug`), then what the access check reads of the
membership (`_MEMBER_SQL`), each of the last two null when there is no such organization or
membership. The parts are told apart by the marker columns between them, so `select *` keeps
following the tables' columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from db import members
from require2fa import compliance

_ORG = "__org"  # marker columns: where the organization's part and the member's part begin
_MEMBER = "__member"

# What the access check reads of the caller's membership of the organization `org`, as
# `db.members` selects it for a member row: its role and teams (the requirement's scope), a
# lasting exemption, and whether the caller meets the organization's level.
_MEMBER_SQL = f"""
    select m.id, m.role, {members.team_slugs_sql("m.id")} as team_slugs,
           {members.EXEMPT_SQL} as exempt_2fa,
           {members.meets_level_sql("caller.id", "org")} as meets_level
    from members m where m.organization_id = org.id and m.user_id = caller.id"""

_PARTS = f"""
    null::boolean as {_ORG}, org.*,
    null::boolean as {_MEMBER}, mm.*
"""
_JOINS = f"""
    left join organizations org on org.slug = $2
    left join lateral ({_MEMBER_SQL}) mm on true
"""
_HAS_2FA = compliance.second_factor_sql("caller.id")  # as `db.users.HAS_2FA_SQL`

# The token's user (marking the token used, at most once a minute, to spare writes), joined.
_BY_TOKEN_SQL = f"""
    with t as (
        update api_tokens set last_used_at = now()
        where token_hash = $1
          and (last_used_at is null or last_used_at < now() - interval '1 minute')
        returning id)
    select k.id as token_id, caller.*, {_HAS_2FA} as has2fa, {_PARTS}
    from api_tokens k join users caller on caller.id = k.user_id
    {_JOINS}
    where k.token_hash = $1"""

_BY_USER_SQL = f"""
    select caller.*, {_HAS_2FA} as has2fa, {_PARTS}
    from users caller
    {_JOINS}
    where caller.id = $1"""


Row = dict[str, Any]  # one part of the row: its columns by name


@dataclass(frozen=True, slots=True)
class Caller:
    user: Row  # the user's row with `has2fa` (and `token_id` for a token)
    org: Row | None  # the organization named, when it exists
    member: Row | None  # the caller's membership of it, when they have one


# Where the markers stand, by the row's width (found once; looked for again if they moved).
_MARKERS: dict[int, tuple[int, int]] = {}


def _split(row: asyncpg.Record | None) -> Caller | None:
    if row is None:
        return None
    items = list(row.items())
    at = _MARKERS.get(len(items))
    if at is None or items[at[0]][0] != _ORG or items[at[1]][0] != _MEMBER:
        keys = [key for key, _value in items]
        at = _MARKERS[len(items)] = (keys.index(_ORG), keys.index(_MEMBER))
    org_at, member_at = at
    org = dict(items[org_at + 1 : member_at])
    member = dict(items[member_at + 1 :])
    return Caller(
        user=dict(items[:org_at]),
        org=org if org["id"] is not None else None,
        member=member if member["id"] is not None else None,
    )


async def by_token(conn: asyncpg.Connection, token_hash: bytes, slug: str | None) -> Caller | None:
    """The token's user (the token marked used), the organization `slug` and their membership;
    None when no token has that hash."""
    return _split(await conn.fetchrow(_BY_TOKEN_SQL, token_hash, slug))


async def by_user(conn: asyncpg.Connection, user_id: int, slug: str | None) -> Caller | None:
    """The user, the organization `slug` and their membership; None when no such user."""
    return _split(await conn.fetchrow(_BY_USER_SQL, user_id, slug))
