"""Who a run would remove, as `GET …/2fa-compliance/` answers: only the acting owner is left out."""

from __future__ import annotations

from tests.factories import add_member, create_user, owner_and_org, token_for

URL = "/api/0/organizations/acme/2fa-compliance/"


async def test_a_manager_without_2fa_is_counted_even_when_asking(client, pool) -> None:
    # The owner has no 2FA yet: counted for a manager.
    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    manager = await create_user(pool, "manager@example.com")
    await add_member(pool, org["id"], manager, role="manager")
    alice = await create_user(pool, "alice@example.com")
    await add_member(pool, org["id"], alice)

    as_manager = await (await client.get(URL, headers=await token_for(pool, manager["id"]))).json()
    assert as_manager["count"] == 3
    assert sorted(m["email"] for m in as_manager["members"]) == [
        "alice@example.com",
        "manager@example.com",
        "owner@example.com",
    ]
    as_owner = await (await client.get(URL, headers=await token_for(pool, owner["id"]))).json()
    assert as_owner["count"] == 2
    assert sorted(m["email"] for m in as_owner["members"]) == [
        "alice@example.com",
        "manager@example.com",
    ]


async def test_is_noncompliant_lists_who_a_run_would_remove(client, pool) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    for email in ("alice@example.com", "bot@example.com"):
        user = await create_user(pool, email)
        await add_member(pool, org["id"], user)
    async with pool.acquire() as conn:
        await conn.execute(
            """update members set exempt_2fa_until = now() + interval '1 day',
                      exempt_2fa_reason = 'bot' where email = 'bot@example.com'"""
        )
    response = await client.get(
        "/api/0/organizations/acme/members/",
        params={"query": "is:noncompliant"},
        headers=await token_for(pool, owner["id"]),
    )
    assert [m["email"] for m in await response.json()] == ["alice@example.com"]


async def test_the_noncompliant_condition_plans_as_an_anti_join(pool) -> None:
    """`compliance.noncompliant_sql` keeps `not exists` at the top of the where list (a negated
    "exempt or has a factor", with its `or`, is planned as a subplan per member instead)."""
    from db.counts import NONCOMPLIANT_SQL

    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    async with pool.acquire() as conn:
        plan = await conn.fetch(
            f"""explain select count(*) from members m join users u on u.id = m.user_id
                                   join organizations o on o.id = m.organization_id
                where m.organization_id = $1 and {NONCOMPLIANT_SQL}""",
            org["id"],
        )
    text = "\n".join(row[0] for row in plan)
    assert "Anti Join" in text and "SubPlan" not in text, text
