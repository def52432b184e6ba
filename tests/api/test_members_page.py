"""The members page as an owner runs the organization from it: invite, change a role, remove,
resend to every pending member, the total and pages both ways, each action back on the same
filtered page with a notice; blocked members and the requirement's scope."""

from __future__ import annotations

from require2fa.errors import wait_in_words
from tests.api.test_policy import run_to_the_end
from tests.factories import (
    add_member,
    create_org,
    create_user,
    enroll_totp,
    remove_for_2fa,
    sign_in,
)

MEMBERS = "/organizations/acme/members/"


async def owner_signed_in(client, pool):
    owner = await create_user(pool, "owner@example.com")
    org = await create_org(pool, "acme", owner["id"], teams=("backend", "web"))
    response = await sign_in(client, "owner@example.com")
    assert response.status == 200
    return org


async def test_invite_change_role_and_remove_come_back_to_the_same_page(client, pool) -> None:
    org = await owner_signed_in(client, pool)
    back = "query=is%3Apending&per_page=5"
    invited = await client.post(
        f"{MEMBERS}invite/",
        data={
            "email": "New@Example.com",
            "role": "admin",
            "teams": ["backend", "web"],
            "back": back,
        },
        allow_redirects=False,
    )
    assert (
        invited.status == 303
        and invited.headers["Location"] == f"{MEMBERS}?query=is:pending&per_page=5"
    )
    page = await (await client.get(invited.headers["Location"])).text()
    assert "new@example.com was invited as admin and emailed a link to join." in page
    assert "pending: invited" in page and "backend, web" in page
    again = await (await client.get(invited.headers["Location"])).text()
    assert "was invited" not in again  # a notice is shown once
    async with pool.acquire() as conn:
        new_id = await conn.fetchval("select id from members where email = 'new@example.com'")
        assert (
            await conn.fetchval(
                "select count(*) from email_outbox where template = 'invite' and member_id = $1",
                new_id,
            )
            == 1
        )
        assert (
            await conn.fetchval("select count(*) from audit_log where event = 'member.invite'") == 1
        )

    twice = await client.post(
        f"{MEMBERS}invite/", data={"email": "new@example.com", "role": "member"}
    )
    assert twice.status == 409 and "already a member or invited" in await twice.text()
    bad = await client.post(f"{MEMBERS}invite/", data={"email": "not an email", "role": "member"})
    assert bad.status == 400 and "Enter an email address." in await bad.text()

    alice = await create_user(pool, "alice@example.com")
    alice_id = await add_member(pool, org["id"], alice)
    changed = await client.post(
        f"{MEMBERS}{alice_id}/role/", data={"role": "manager", "back": "query=alice"}
    )
    assert dict(changed.url.query) == {"query": "alice"}
    assert "alice@example.com is now manager." in await changed.text()
    async with pool.acquire() as conn:
        assert await conn.fetchval("select role from members where id = $1", alice_id) == "manager"

    asked = await client.post(f"{MEMBERS}{alice_id}/remove/", data={"back": "query=alice"})
    text = await asked.text()
    assert asked.status == 200 and "Remove alice@example.com from" in text
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from members where id = $1", alice_id) == 1
    removed = await client.post(
        f"{MEMBERS}{alice_id}/remove/", data={"confirmed": "yes", "back": "query=alice"}
    )
    assert dict(removed.url.query) == {"query": "alice"}
    assert "alice@example.com was removed from" in await removed.text()
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from members where id = $1", alice_id) == 0


async def test_the_last_owner_cannot_be_demoted_and_reset_is_only_for_members_with_factors(
    client, pool
) -> None:
    org = await owner_signed_in(client, pool)
    carol = await create_user(pool, "carol@example.com", has2fa=True)
    carol_id = await add_member(pool, org["id"], carol)
    dave_id = await add_member(pool, org["id"], await create_user(pool, "dave@example.com"))
    page = await (await client.get(MEMBERS)).text()
    assert "<th>Actions</th>" in page
    assert (
        f"/members/{carol_id}/reset-2fa/" in page and f"/members/{dave_id}/reset-2fa/" not in page
    )

    # Dave made an owner demotes the first owner; he is then the last one and keeps the role.
    await client.post(f"{MEMBERS}{dave_id}/role/", data={"role": "owner"})
    async with pool.acquire() as conn:
        first_owner = await conn.fetchval(
            "select id from members where email = 'owner@example.com'"
        )
    await sign_in(client, "dave@example.com")
    demoted = await client.post(f"{MEMBERS}{first_owner}/role/", data={"role": "member"})
    assert "owner@example.com is now member." in await demoted.text()
    refused = await client.post(f"{MEMBERS}{dave_id}/role/", data={"role": "member"})
    assert refused.status == 409 and "at least one owner" in await refused.text()
    async with pool.acquire() as conn:
        assert await conn.fetchval("select role from members where id = $1", dave_id) == "owner"


async def test_resend_to_every_pending_member_counts_and_is_rate_limited(
    client, pool, settings
) -> None:
    org = await owner_signed_in(client, pool)
    for name in ("alice", "bob"):
        member = await add_member(pool, org["id"], await create_user(pool, f"{name}@example.com"))
        await remove_for_2fa(pool, member, settings)
    await client.post(f"{MEMBERS}invite/", data={"email": "carol@example.com", "role": "member"})
    page = await (await client.get(MEMBERS)).text()
    assert "Resend to every pending member (3)" in page

    async def emails() -> int:
        async with pool.acquire() as conn:
            return await conn.fetchval("select count(*) from email_outbox")

    before = await emails()
    done = await client.post(f"{MEMBERS}resend-all/", data={"back": "query=is%3Apending"})
    assert dict(done.url.query) == {"query": "is:pending"}
    assert "The email was sent again to 3 pending members." in await done.text()
    assert await emails() == before + 3
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("select count(*) from audit_log where event = 'member.reinvite'")
            == 3
        )
        templates = await conn.fetch(
            "select template, count(*) from email_outbox group by template order by template"
        )
    assert {row["template"]: row["count"] for row in templates} == {
        "invite": 2,
        "removed_for_2fa": 4,
    }
    for _ in range(2):
        await client.post(f"{MEMBERS}resend-all/")
    limited = await client.post(f"{MEMBERS}resend-all/")
    assert limited.status == 429 and "Retry-After" in limited.headers
    wait = wait_in_words(int(limited.headers["Retry-After"]))
    assert f"a short while ago; try again in {wait}." in await limited.text()


async def test_the_total_and_pages_both_ways(client, pool) -> None:
    org = await owner_signed_in(client, pool)
    for n in range(5):
        await add_member(pool, org["id"], await create_user(pool, f"dev{n}@example.com"))
    first = await (await client.get(MEMBERS, params={"per_page": "2"})).text()
    assert "6 members" in first and "Next page" in first and "Previous page" not in first
    assert "owner@example.com" in first and "dev1@example.com" not in first
    async with pool.acquire() as conn:
        ids = [r["id"] for r in await conn.fetch("select id from members order by id")]
    second = await client.get(MEMBERS, params={"per_page": "2", "cursor": str(ids[1])})
    text = await second.text()
    assert "dev1@example.com" in text and "dev2@example.com" in text
    assert "Previous page" in text and "Next page" in text
    back = await client.get(MEMBERS, params={"per_page": "2", "before": str(ids[2])})
    text = await back.text()
    assert "owner@example.com" in text and "dev0@example.com" in text
    assert "dev1@example.com" not in text and "Previous page" not in text
    filtered = await (await client.get(MEMBERS, params={"query": "dev3"})).text()
    assert "1 member match" in filtered


def _row_of(page: str, email: str) -> str:
    """The members table's row of `email`."""
    return next(row for row in page.split("<tr>") if f'<td class="email">{email}' in row)


async def test_blocked_members_have_a_badge_and_the_scope_says_who_must_comply(
    client, pool, settings, broker
) -> None:
    org = await owner_signed_in(client, pool)
    await enroll_totp(client)
    for name, role, teams in (
        ("ann", "admin", ()),
        ("wes", "member", ("web",)),
        ("bob", "member", ("backend",)),
    ):
        user = await create_user(pool, f"{name}@example.com")
        await add_member(pool, org["id"], user, role=role, teams=teams)
    page = await (await client.get(MEMBERS)).text()
    assert 'id="scope"' not in page  # everyone, the default: no line

    policy = {
        "require2FA": True,
        "require2FAAction": "block",
        "require2FAScope": {"roles": ["admin"], "teams": ["web"]},
    }
    await run_to_the_end(
        pool, settings, await client.put("/api/0/organizations/acme/", json=policy)
    )
    page = await (await client.get(MEMBERS)).text()
    assert (
        "Acme requires two-factor authentication only of members whose role is admin,"
        " and members of #web; everyone else may work without it." in page
    )
    assert ">Blocked</span>" in _row_of(page, "ann@example.com")
    assert ">Blocked</span>" in _row_of(page, "wes@example.com")
    assert ">Blocked</span>" not in _row_of(page, "bob@example.com")
    assert page.count(">Blocked</span>") == 2

    only = await (await client.get(MEMBERS, params={"query": "is:blocked"})).text()
    assert only.count(">Blocked</span>") == 2 and "bob@example.com" not in only
