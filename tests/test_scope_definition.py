"""The scope of the one definition (`require2FAScope`): `compliance.in_scope_sql` in each form
the statements use (the scope from the organization's columns, from parameters) and the set of
`compliance.scope_members_sql` answer as `compliance.in_scope` does in Python, for members with
every mix of role and teams."""

from __future__ import annotations

import itertools

import pytest

from require2fa import compliance
from tests.factories import add_member, create_org, create_user

TEAMS = ("web", "ops", "data")
# (role, teams) of each member
MEMBERS = [
    (role, teams)
    for role in ("owner", "admin", "member", "billing")
    for teams in ((), ("web",), ("ops", "data"), ("web", "ops"))
]
SCOPES = [
    ((), ()),
    (("admin",), ()),
    ((), ("web",)),
    (("admin", "billing"), ("ops",)),
    (("owner",), ("data", "web")),
    ((), ("nowhere",)),
]


@pytest.fixture
async def org_members(pool) -> tuple[int, list[tuple[int, str, tuple[str, ...]]]]:
    owner = await create_user(pool, "scope-owner@example.com")
    org = await create_org(pool, "scoped", owner["id"], teams=TEAMS)
    async with pool.acquire() as conn:
        owner_member = await conn.fetchval("select id from members where user_id = $1", owner["id"])
    found = [(owner_member, "owner", ())]
    for n, (role, teams) in enumerate(MEMBERS):
        user = await create_user(pool, f"scope-{n}@example.com")
        found.append((await add_member(pool, org["id"], user, role=role, teams=teams), role, teams))
    return org["id"], found


async def test_in_scope_sql_agrees_with_in_scope(pool, org_members) -> None:
    org_id, found = org_members
    ids = [member_id for member_id, _, _ in found]
    by_params = compliance.in_scope_sql(
        "m.id", "m.role", roles_sql="$2::text[]", teams_sql="$3::text[]", organization_id_sql="$1"
    )
    members_of = compliance.scope_members_sql(
        "$1::bigint", roles_sql="$2::text[]", teams_sql="$3::text[]"
    )
    by_columns = compliance.in_scope_sql("m.id", "m.role")
    async with pool.acquire() as conn:
        for roles, teams in SCOPES:
            expected = {
                member_id
                for member_id, role, member_teams in found
                if compliance.in_scope(role, member_teams, roles, teams)
            }
            scope = (list(roles) or None, list(teams) or None)
            rows = await conn.fetch(
                f"""select m.id from members m
                    where m.organization_id = $1 and m.id = any($4::bigint[]) and {by_params}""",
                org_id,
                *scope,
                ids,
            )
            assert {r["id"] for r in rows} == expected, (roles, teams)
            if roles or teams:  # the set form is for a scope (everyone is the caller's case)
                rows = await conn.fetch(members_of, org_id, *scope)
                assert {r["id"] for r in rows} == expected, (roles, teams)
            await conn.execute(
                """update organizations set require_2fa_scope_roles = $2,
                                            require_2fa_scope_teams = $3 where id = $1""",
                org_id,
                *scope,
            )
            rows = await conn.fetch(
                f"""select m.id from members m join organizations o on o.id = m.organization_id
                    where m.organization_id = $1 and m.id = any($2::bigint[]) and {by_columns}""",
                org_id,
                ids,
            )
            assert {r["id"] for r in rows} == expected, (roles, teams)


def test_widening_and_narrowing_are_judged_on_sets() -> None:
    for (old_r, old_t), (new_r, new_t) in itertools.product(SCOPES[:5], repeat=2):
        old = {
            n
            for n, (role, teams) in enumerate(MEMBERS)
            if compliance.in_scope(role, teams, old_r, old_t)
        }
        new = {
            n
            for n, (role, teams) in enumerate(MEMBERS)
            if compliance.in_scope(role, teams, new_r, new_t)
        }
        if new - old:  # someone newly in scope: a run is due
            assert compliance.widens(old_r, old_t, new_r, new_t), (old_r, old_t, new_r, new_t)
        if old - new:  # someone left out: needs sudo
            assert compliance.narrows(old_r, old_t, new_r, new_t), (old_r, old_t, new_r, new_t)
