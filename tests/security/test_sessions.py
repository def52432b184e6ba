"""Sessions live on the server (docs/SECURITY.md): the cookie is only a key; logging out, ending a
session, changing the password or removing a factor ends sessions for good."""

from __future__ import annotations

import hashlib

from api.app import create_app
from tests.factories import PASSWORD, create_user, enroll_totp, sign_in, token_for
from tests.security.helpers import cookie_of, use_cookie

ME = "/api/0/users/me/"
SESSIONS = "/api/0/users/me/sessions/"


async def test_a_saved_cookie_is_useless_after_logout(client, pool) -> None:
    await create_user(pool, "ada@example.com")
    assert (await sign_in(client, "ada@example.com")).status == 200
    saved = cookie_of(client)
    assert (await client.get(ME)).status == 200
    assert (await client.post("/api/0/auth/logout/")).status == 204
    use_cookie(client, saved)
    replay = await client.get(ME)
    assert replay.status == 401, await replay.text()


async def test_the_cookie_is_only_a_random_key(client, pool) -> None:
    user = await create_user(pool, "ada@example.com")
    assert (await sign_in(client, "ada@example.com")).status == 200
    key = cookie_of(client)
    assert 40 <= len(key) <= 64 and "ada" not in key
    async with pool.acquire() as conn:
        row = await conn.fetchrow("select * from sessions")
    assert bytes(row["key_hash"]) == hashlib.sha256(key.encode()).digest()
    assert row["user_id"] == user["id"]
    assert key.encode() not in str(dict(row)).encode()  # only the hash is stored


async def test_signing_in_again_replaces_the_session(client, pool) -> None:
    """A fixated (planted) cookie is worth nothing: signing in starts a new key."""
    await create_user(pool, "ada@example.com")
    assert (await sign_in(client, "ada@example.com")).status == 200
    first = cookie_of(client)
    assert (await sign_in(client, "ada@example.com")).status == 200
    assert cookie_of(client) != first
    use_cookie(client, first)
    assert (await client.get(ME)).status == 401


async def test_list_and_end_sessions(client, aiohttp_client, settings, pool) -> None:
    await create_user(pool, "ada@example.com")
    bob = await create_user(pool, "bob@example.com")
    laptop, phone, tablet = (
        client,
        await aiohttp_client(create_app(settings)),
        await aiohttp_client(create_app(settings)),
    )
    for browser in (laptop, phone, tablet):
        assert (await sign_in(browser, "ada@example.com")).status == 200
    listed = await laptop.get(SESSIONS, headers={"User-Agent": "Laptop/1.0"})
    rows = await listed.json()
    assert listed.status == 200 and len(rows) == 3
    assert [row["current"] for row in rows].count(True) == 1
    assert set(rows[0]) == {"id", "current", "createdAt", "lastSeenAt", "ipAddress", "userAgent"}
    phone_id = next(r["id"] for r in await (await phone.get(SESSIONS)).json() if r["current"])

    # Someone else's session is not yours to end.
    bob_headers = await token_for(pool, bob["id"])
    assert (await laptop.delete(f"{SESSIONS}{phone_id}/", headers=bob_headers)).status == 404
    assert (await laptop.delete(f"{SESSIONS}{phone_id}/")).status == 204
    assert (await phone.get(ME)).status == 401
    assert (await laptop.delete(f"{SESSIONS}{phone_id}/")).status == 404
    assert (await laptop.delete(f"{SESSIONS}abc/")).status == 404

    assert (await laptop.delete(SESSIONS)).status == 204  # every other one
    assert (await tablet.get(ME)).status == 401
    assert (await laptop.get(ME)).status == 200
    assert len(await (await laptop.get(SESSIONS)).json()) == 1


async def test_ending_the_current_session_signs_out(client, pool) -> None:
    await create_user(pool, "ada@example.com")
    assert (await sign_in(client, "ada@example.com")).status == 200
    (mine,) = await (await client.get(SESSIONS)).json()
    assert (await client.delete(f"{SESSIONS}{mine['id']}/")).status == 204
    assert (await client.get(ME)).status == 401


async def test_a_password_change_ends_the_other_sessions(client, aiohttp_client, settings, pool):
    await create_user(pool, "ada@example.com")
    other = await aiohttp_client(create_app(settings))
    assert (await sign_in(client, "ada@example.com")).status == 200
    assert (await sign_in(other, "ada@example.com")).status == 200
    url = "/api/0/users/me/password/"
    wrong = await client.put(url, json={"current": "not it", "password": "a new passphrase"})
    assert wrong.status == 401
    assert (await other.get(ME)).status == 200
    changed = await client.put(url, json={"current": PASSWORD, "password": "a new passphrase"})
    assert changed.status == 204, await changed.text()
    assert (await other.get(ME)).status == 401
    assert (await client.get(ME)).status == 200
    assert (await sign_in(other, "ada@example.com")).status == 401
    assert (await sign_in(other, "ada@example.com", "a new passphrase")).status == 200


async def test_removing_a_factor_ends_the_other_sessions(client, aiohttp_client, settings, pool):
    await client.post(
        "/api/0/auth/register/", json={"email": "ada@example.com", "password": PASSWORD}
    )
    await enroll_totp(client)
    other = await aiohttp_client(create_app(settings))
    assert (await sign_in(other, "ada@example.com")).status == 401  # half signed in
    factors = await (await client.get("/api/0/users/me/authenticators/")).json()
    totp_id = next(f["id"] for f in factors if f["type"] == "totp")
    removed = await client.delete(f"/api/0/users/me/authenticators/{totp_id}/")
    assert removed.status == 204, await removed.text()
    assert (await client.get(ME)).status == 200
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from sessions") == 1


async def test_bearer_requests_do_not_touch_sessions(client, pool) -> None:
    user = await create_user(pool, "ada@example.com")
    headers = await token_for(pool, user["id"])
    for _ in range(3):
        assert (await client.get(ME, headers=headers)).status == 200
    assert "Set-Cookie" not in (await client.get(ME, headers=headers)).headers
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from sessions") == 0
