"""Invitations bound to the invited email (issue 25, point 2): after a login CSRF the victim's
own Join link cannot hand their membership to the attacker's account; the invited account
takes it whatever the case of its email."""

from __future__ import annotations

from tests.api.test_invites import invite_link, memberships
from tests.factories import create_org, create_user, sign_in


async def test_another_account_cannot_take_the_invitation(client, pool) -> None:
    owner = await create_user(pool, "owner@example.com", has2fa=True)
    await create_org(pool, "acme", owner["id"])
    member_id, link = await invite_link(client, pool, owner["id"], "acme", "victim@example.com")
    attacker = await create_user(pool, "attacker@example.com")
    await sign_in(client, "attacker@example.com")  # as a forged sign-in would leave the browser

    pressed = await client.post(link)
    assert pressed.status == 403
    detail = (await pressed.json())["detail"]
    assert detail.startswith("This invitation was sent to victim@example.com;")
    assert "you are signed in as attacker@example.com" in detail
    page = await client.post(link.replace("/api/0/accept-invite/", "/accept/"))
    assert page.status == 403
    assert "This invitation was sent to victim@example.com" in await page.text()
    assert await memberships(pool, attacker["id"]) == []
    async with pool.acquire() as conn:
        row = await conn.fetchrow("select user_id, role from members where id = $1", member_id)
    assert row["user_id"] is None


async def test_the_invited_account_takes_it_whatever_the_case(client, pool) -> None:
    owner = await create_user(pool, "owner@example.com", has2fa=True)
    await create_org(pool, "acme", owner["id"])
    _, link = await invite_link(client, pool, owner["id"], "acme", "dana@example.com")
    dana = await create_user(pool, "Dana@Example.COM")
    assert (await sign_in(client, "Dana@Example.COM")).status == 200
    joined = await client.post(link)
    assert joined.status == 200, await joined.text()
    assert await memberships(pool, dana["id"]) == ["acme"]
