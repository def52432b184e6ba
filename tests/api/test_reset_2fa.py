"""An owner resets one member's two-factor authentication: `POST …/members/{id}/reset-2fa/`."""

from __future__ import annotations

import asyncio

import pytest

from tests.factories import (
    add_member,
    create_user,
    enroll_totp,
    link_in,
    owner_and_org,
    sign_in,
    token_for,
)


def url(member_id: int, slug: str = "acme") -> str:
    return f"/api/0/organizations/{slug}/members/{member_id}/reset-2fa/"


async def acme(pool, *, required: bool = False):
    owner, org = await owner_and_org(
        pool, "acme", "owner@example.com", has2fa=True, teams=("backend",)
    )
    if required:
        async with pool.acquire() as conn:
            await conn.execute(
                "update organizations set require_2fa = true where id = $1", org["id"]
            )
    return org, owner, await token_for(pool, owner["id"])


async def enrolled_member(client, pool, org_id: int, email: str = "alice@example.com", **kw):
    """A member who set up TOTP (and got recovery codes) through the API."""
    user = await create_user(pool, email)
    member_id = await add_member(pool, org_id, user, **kw)
    headers = await token_for(pool, user["id"])
    await enroll_totp(client, headers)
    return user, member_id, headers


async def factors(pool, user_id: int) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "select type from authenticators where user_id = $1 order by type", user_id
        )
    return [row["type"] for row in rows]


async def outbox_rows(pool) -> list:
    async with pool.acquire() as conn:
        return await conn.fetch("select * from email_outbox order by id")


async def test_reset_deletes_factors_audits_and_sends_a_security_notice(client, pool) -> None:
    org, owner, headers = await acme(pool)
    alice, member_id, _alice_headers = await enrolled_member(client, pool, org["id"])
    assert await factors(pool, alice["id"]) == ["recovery", "totp"]
    before = len(await outbox_rows(pool))

    response = await client.post(url(member_id), headers=headers)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["deletedFactors"] == ["recovery", "totp"] and body["removed"] is False
    assert body["member"]["user"]["has2fa"] is False and body["member"]["pending"] is False

    assert await factors(pool, alice["id"]) == []
    async with pool.acquire() as conn:
        codes = await conn.fetchval("select count(*) from recovery_codes")
        (entry,) = await conn.fetch("select * from audit_log where event = 'member.2fa-reset'")
    assert codes == 0
    assert entry["actor_user_id"] == owner["id"] and entry["target_member_id"] == member_id
    assert entry["target_user_id"] == alice["id"]
    assert entry["data"] == {"email": "alice@example.com", "factors": ["recovery", "totp"]}
    (notice,) = (await outbox_rows(pool))[before:]
    assert notice["template"] == "security_notice" and notice["to_address"] == alice["email"]
    assert notice["context"]["action"] == "reset" and notice["context"]["org_name"] == "Acme"


async def test_where_required_the_member_is_removed_at_once_and_can_rejoin(
    client, pool, settings
) -> None:
    org, _owner, headers = await acme(pool, required=True)
    alice, member_id, _ = await enrolled_member(
        client, pool, org["id"], role="admin", teams=("backend",)
    )
    response = await client.post(url(member_id), headers=headers)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["removed"] is True
    assert body["member"]["pending"] is True and body["member"]["pendingReason"] == "2fa"
    assert body["member"]["role"] == "admin" and body["member"]["teams"] == ["backend"]

    async with pool.acquire() as conn:
        pending = await conn.fetchrow(
            "select * from audit_log where event = 'member.pending' and target_member_id = $1",
            member_id,
        )
    assert pending["data"]["reason"] == "2fa-reset" and pending["data"]["teams"] == ["backend"]
    async with pool.acquire() as conn:
        removed = await conn.fetchrow("select * from members where id = $1", member_id)
    # As a batch leaves a member: the rule it failed, no run, the window from the removal.
    assert removed["removal_reason"] == "2fa" and removed["removed_by_run"] is None
    assert removed["reinstate_by"] - removed["removed_at"] == settings.reinstatement_window
    emails = {row["template"]: row for row in await outbox_rows(pool)}
    mandatory = emails["removed_for_2fa"]
    assert mandatory["to_address"] == "alice@example.com"
    link = link_in(mandatory["context"])
    assert link.startswith(f"http://testserver/accept/{member_id}/")
    assert emails["security_notice"]["context"]["removed"] is True

    # The member sets up a new factor and rejoins with everything back.
    await sign_in(client, "alice@example.com")
    await enroll_totp(client)
    path = "/api/0/accept-invite/" + link.split("/accept/", 1)[1]
    joined = await client.post(path)
    assert joined.status == 200, await joined.text()
    async with pool.acquire() as conn:
        row = await conn.fetchrow("select * from members where id = $1", member_id)
    assert row["user_id"] == alice["id"] and row["role"] == "admin"


async def test_a_user_in_two_organizations_is_a_409_and_nothing_changes(client, pool) -> None:
    org, _owner, headers = await acme(pool)
    alice, member_id, _ = await enrolled_member(client, pool, org["id"])
    other_owner, other = await owner_and_org(pool, "other", "other@example.com", has2fa=True)
    await add_member(pool, other["id"], alice)
    before = len(await outbox_rows(pool))

    response = await client.post(url(member_id), headers=headers)
    assert response.status == 409
    assert "another organization" in (await response.json())["detail"]
    assert await factors(pool, alice["id"]) == ["recovery", "totp"]
    assert len(await outbox_rows(pool)) == before
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("select count(*) from audit_log where event = 'member.2fa-reset'")
            == 0
        )


@pytest.mark.parametrize("role", ["manager", "admin", "member"])
async def test_only_owners(client, pool, role) -> None:
    org, _owner, _headers = await acme(pool)
    _alice, member_id, _ = await enrolled_member(client, pool, org["id"])
    caller = await create_user(pool, f"{role}@example.com", has2fa=True)
    await add_member(pool, org["id"], caller, role=role)
    response = await client.post(url(member_id), headers=await token_for(pool, caller["id"]))
    assert response.status == 403 and "owner" in (await response.json())["detail"]


async def test_refusals(client, pool) -> None:
    org, owner, headers = await acme(pool)
    async with pool.acquire() as conn:
        me = await conn.fetchval("select id from members where user_id = $1", owner["id"])
        invited = await conn.fetchval(
            """insert into members (organization_id, email, role, pending_reason, token_hash)
               values ($1, 'inv@example.com', 'member', 'invite', '\\x00') returning id""",
            org["id"],
        )
    mine = await client.post(url(me), headers=headers)
    assert mine.status == 409 and "security page" in (await mine.json())["detail"]
    pending = await client.post(url(invited), headers=headers)
    assert pending.status == 409
    missing = await client.post(url(999999), headers=headers)
    assert missing.status == 404
    bad = await client.post(url(0).replace("/0/reset", "/abc/reset"), headers=headers)
    assert bad.status == 404 and "detail" in await bad.json()
    root = await create_user(pool, "root@example.com", has2fa=True)
    async with pool.acquire() as conn:
        await conn.execute("update users set is_superuser = true where id = $1", root["id"])
    root_member = await add_member(pool, org["id"], root)
    superuser = await client.post(url(root_member), headers=headers)
    assert superuser.status == 409


async def test_two_resets_at_once_delete_and_audit_once(client, pool) -> None:
    org, _owner, headers = await acme(pool, required=True)
    _alice, member_id, _ = await enrolled_member(client, pool, org["id"])
    first, second = await asyncio.gather(
        client.post(url(member_id), headers=headers), client.post(url(member_id), headers=headers)
    )
    assert sorted([first.status, second.status]) == [200, 409]
    async with pool.acquire() as conn:
        resets = await conn.fetchval(
            "select count(*) from audit_log where event = 'member.2fa-reset'"
        )
        removals = await conn.fetchval(
            "select count(*) from email_outbox where template = 'removed_for_2fa'"
        )
    assert resets == 1 and removals == 1


async def test_reset_and_exemption_need_a_recent_reauthentication_in_a_session(
    client, pool
) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.factories import PASSWORD
    from tests.security.helpers import age_reauthentication

    org, _owner, _headers = await acme(pool)
    # A second owner without 2FA signs in with a password (a cookie session).
    second = await create_user(pool, "second@example.com")
    await add_member(pool, org["id"], second, role="owner")
    alice, member_id, _alice_headers = await enrolled_member(client, pool, org["id"])
    bot = await create_user(pool, "bot@example.com")
    bot_id = await add_member(pool, org["id"], bot)
    assert (await sign_in(client, "second@example.com")).status == 200
    await age_reauthentication(pool)

    until = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    exempt = {"exempt2FA": {"reason": "CI bot", "until": until}}
    member_url = f"/api/0/organizations/acme/members/{bot_id}/"
    for answer in (
        await client.post(url(member_id)),
        await client.put(member_url, json=exempt),
    ):
        assert answer.status == 401, await answer.text()
        assert (await answer.json())["code"] == "sudo-required"
    # Nothing changed.
    assert await factors(pool, alice["id"]) == ["recovery", "totp"]
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("select exempt_2fa_until from members where id = $1", bot_id)
            is None
        )

    assert (await client.post("/api/0/auth/sudo/", json={"password": PASSWORD})).status == 200
    assert (await client.post(url(member_id))).status == 200
    assert (await client.put(member_url, json=exempt)).status == 200


async def test_a_reset_signs_the_member_out_everywhere(client, pool) -> None:
    org, _owner, headers = await acme(pool)
    member = await create_user(pool, "bob@example.com")
    member_id = await add_member(pool, org["id"], member)
    assert (await sign_in(client, "bob@example.com")).status == 200
    assert (await client.get("/api/0/users/me/")).status == 200
    await enroll_totp(client)

    answer = await client.post(url(member_id), headers=headers)
    assert answer.status == 200, await answer.text()
    # Bob's session (maybe whoever took his factor) is over.
    assert (await client.get("/api/0/users/me/")).status == 401
