"""What signs in as a user ends when it should (issue 25, points 4 and 8): a 2FA reset ends
sessions and API tokens; a password change revokes the other tokens; a member removed for 2FA,
or without 2FA where it is required, keeps a working token for their own account but gets
401 `2fa-required` on the organization; a reset is refused while the user is pending elsewhere."""

from __future__ import annotations

from tests.factories import (
    PASSWORD,
    add_member,
    create_org,
    create_user,
    enroll_totp,
    remove_for_2fa,
    sign_in,
    token_for,
)
from tests.security.helpers import cookie_of, use_cookie

ME = "/api/0/users/me/"


async def _acme(pool, *, required: bool = False):
    owner = await create_user(pool, "owner@example.com", has2fa=True)
    org = await create_org(pool, "acme", owner["id"])
    if required:
        async with pool.acquire() as conn:
            await conn.execute(
                "update organizations set require_2fa = true where id = $1", org["id"]
            )
    return org, await token_for(pool, owner["id"])


async def test_a_reset_revokes_the_members_tokens_and_sessions(client, pool) -> None:
    org, owner = await _acme(pool)
    alice = await create_user(pool, "alice@example.com")
    member_id = await add_member(pool, org["id"], alice)
    token = await token_for(pool, alice["id"])
    await enroll_totp(client, token)
    second_token = await token_for(pool, alice["id"])
    assert (await client.get(ME, headers=second_token)).status == 200
    assert (await sign_in(client, "alice@example.com")).status == 401  # half signed in: 2FA
    half = cookie_of(client)
    client.session.cookie_jar.clear()

    response = await client.post(
        f"/api/0/organizations/acme/members/{member_id}/reset-2fa/", headers=owner
    )
    assert response.status == 200, await response.text()

    for headers in (token, second_token):
        assert (await client.get(ME, headers=headers)).status == 401
        enroll = await client.post(
            "/api/0/users/me/authenticators/totp/enroll/", json={}, headers=headers
        )
        assert enroll.status == 401
    use_cookie(client, half)
    assert (await client.post("/api/0/auth/2fa/", json={"otp": "000000"})).status == 401
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("select count(*) from api_tokens where user_id = $1", alice["id"])
            == 0
        )
    # The owner's own token is untouched.
    assert (await client.get(ME, headers=owner)).status == 200


async def test_a_password_change_revokes_the_other_tokens(client, pool) -> None:
    alice = await create_user(pool, "alice@example.com")
    old = await token_for(pool, alice["id"])
    assert (await sign_in(client, "alice@example.com")).status == 200
    response = await client.put(
        "/api/0/users/me/password/", json={"current": PASSWORD, "password": "a new long one"}
    )
    assert response.status == 204, await response.text()
    assert (await client.get(ME, headers=old)).status == 401
    assert (await client.get(ME)).status == 200  # the session it was made in stays


async def test_a_password_change_made_with_a_token_keeps_that_token(client, pool) -> None:
    alice = await create_user(pool, "alice@example.com")
    caller = await token_for(pool, alice["id"])
    other = await token_for(pool, alice["id"])
    response = await client.put(
        "/api/0/users/me/password/",
        json={"current": PASSWORD, "password": "a new long one"},
        headers=caller,
    )
    assert response.status == 204, await response.text()
    assert (await client.get(ME, headers=caller)).status == 200
    assert (await client.get(ME, headers=other)).status == 401


async def test_a_member_removed_for_2fa_keeps_their_token_for_their_own_account(
    client, pool, settings
) -> None:
    org, _owner = await _acme(pool, required=True)
    bob = await create_user(pool, "bob@example.com")
    carol = await create_user(pool, "carol@example.com")
    bob_member = await add_member(pool, org["id"], bob)
    await add_member(pool, org["id"], carol)
    bob_token = await token_for(pool, bob["id"])
    carol_token = await token_for(pool, carol["id"])
    await remove_for_2fa(pool, bob_member, settings)

    for headers in (bob_token, carol_token):  # removed; still a member without 2FA
        assert (await client.get(ME, headers=headers)).status == 200
        response = await client.get("/api/0/organizations/acme/members/", headers=headers)
        if headers is carol_token:
            assert response.status == 401
            assert (await response.json())["code"] == "2fa-required"
        else:
            assert response.status == 404  # no longer a member: the organization is not shown


async def test_a_reset_is_refused_while_the_user_is_pending_in_another_organization(
    client, pool, settings
) -> None:
    org, owner = await _acme(pool)
    other_owner = await create_user(pool, "other@example.com", has2fa=True)
    other = await create_org(pool, "other", other_owner["id"])
    alice = await create_user(pool, "alice@example.com", has2fa=True)
    member_id = await add_member(pool, org["id"], alice)
    elsewhere = await add_member(pool, other["id"], alice)
    await remove_for_2fa(pool, elsewhere, settings)

    response = await client.post(
        f"/api/0/organizations/acme/members/{member_id}/reset-2fa/", headers=owner
    )
    assert response.status == 409
    assert "another organization" in (await response.json())["detail"]
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "select count(*) from authenticators where user_id = $1", alice["id"]
            )
            == 1
        )
