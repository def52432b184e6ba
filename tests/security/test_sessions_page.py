"""The Sessions section of /account/security/ (issue 10, point 2): it lists the person's
sessions (device, address, last seen, this one marked) and ends one or all the others with
plain forms; the clock's hourly job deletes only the rows whose time is up."""

from __future__ import annotations

import html
from datetime import timedelta

from api.app import create_app
from db import sessions
from jobs.maintenance import purge_sessions_now
from require2fa.security import new_token, token_hash
from tests.factories import create_user, sign_in

ME = "/api/0/users/me/"
PAGE = "/account/security/"

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


async def _two_browsers(client, aiohttp_client, settings, pool):
    await create_user(pool, "ada@example.com")
    other = await aiohttp_client(create_app(settings), headers={"User-Agent": FIREFOX})
    assert (await sign_in(client, "ada@example.com")).status == 200
    assert (await sign_in(other, "ada@example.com")).status == 200
    listed = await (await client.get(ME + "sessions/")).json()
    mine = next(item["id"] for item in listed if item["current"])
    theirs = next(item["id"] for item in listed if not item["current"])
    return other, mine, theirs


async def test_the_page_lists_the_sessions_and_marks_this_one(
    client, aiohttp_client, settings, pool
) -> None:
    await _two_browsers(client, aiohttp_client, settings, pool)
    page = html.unescape(await (await client.get(PAGE)).text())
    assert "<h2>Sessions</h2>" in page
    assert "Firefox 128 on Linux" in page  # the device, as a person reads it
    assert page.count("This session") == 1
    assert "127.0.0.1" in page
    assert "End all other sessions" in page


async def test_ending_another_session_from_the_page(client, aiohttp_client, settings, pool) -> None:
    other, mine, theirs = await _two_browsers(client, aiohttp_client, settings, pool)
    ended = await client.post(f"{PAGE}sessions/{theirs}/end/", data={})
    assert ended.status == 200
    assert "Session ended." in await ended.text()
    assert (await other.get(ME)).status == 401
    assert (await client.get(ME)).status == 200
    # Someone else's or an unknown session: not found, nothing ended.
    missing = await client.post(f"{PAGE}sessions/{theirs}/end/", data={})
    assert missing.status == 404


async def test_ending_all_others_keeps_this_one(client, aiohttp_client, settings, pool) -> None:
    other, _mine, _theirs = await _two_browsers(client, aiohttp_client, settings, pool)
    ended = await client.post(f"{PAGE}sessions/end-others/", data={})
    assert ended.status == 200 and "1 other session ended." in await ended.text()
    assert (await other.get(ME)).status == 401
    assert (await client.get(ME)).status == 200


async def test_ending_this_session_signs_out(client, aiohttp_client, settings, pool) -> None:
    other, mine, _theirs = await _two_browsers(client, aiohttp_client, settings, pool)
    ended = await client.post(f"{PAGE}sessions/{mine}/end/", data={}, allow_redirects=False)
    assert ended.status == 303 and ended.headers["Location"] == "/auth/login/"
    assert (await client.get(ME)).status == 401
    assert (await other.get(ME)).status == 200


async def test_a_form_from_another_site_ends_nothing(
    client, aiohttp_client, settings, pool
) -> None:
    other, _mine, theirs = await _two_browsers(client, aiohttp_client, settings, pool)
    refused = await client.post(
        f"{PAGE}sessions/{theirs}/end/", data={}, headers={"Origin": "http://evil.example"}
    )
    assert refused.status == 403
    assert (await other.get(ME)).status == 200


async def test_the_purge_removes_only_expired_sessions(pool) -> None:
    ada = await create_user(pool, "ada@example.com")
    async with pool.acquire() as conn:
        for max_age in (timedelta(days=1), timedelta(seconds=-1), timedelta(days=-3)):
            await sessions.create(
                conn,
                key_hash=token_hash(new_token()),
                data={"uid": ada["id"]},
                max_age=max_age,
                ip_address="127.0.0.1",
                user_agent="Test",
            )
    assert await purge_sessions_now(pool, batch_size=1) == 2
    async with pool.acquire() as conn:
        left = await conn.fetch("select expires_at > now() as live from sessions")
    assert [row["live"] for row in left] == [True]
    assert await purge_sessions_now(pool) == 0
