"""Floods (issue 25, point 11): invitations per account and per organization a day, sign-ups
per address an hour, text messages per account and per number an hour; each a 429 with
`Retry-After` and a sentence, and nothing sent beyond the cap."""

from __future__ import annotations

import pytest

from require2fa.caps import (
    INVITES_PER_ACCOUNT,
    INVITES_PER_ORGANIZATION,
    SIGN_UPS_PER_ADDRESS,
    SMS_PER_ACCOUNT,
    SMS_PER_NUMBER,
)
from require2fa.errors import wait_in_words
from tests.factories import PASSWORD, add_member, create_org, create_user, token_for

SMS = "/api/0/users/me/authenticators/sms/enroll/"


def _refused(response, status: int = 429) -> None:
    assert response.status == status
    assert int(response.headers["Retry-After"]) > 0


async def _outbox(pool) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("select count(*) from email_outbox where template = 'invite'")


async def _invite(client, headers, email: str):
    return await client.post(
        "/api/0/organizations/acme/members/",
        json={"email": email, "role": "member"},
        headers=headers,
    )


async def test_invitations_are_capped_per_account_and_per_organization(client, pool) -> None:
    owner = await create_user(pool, "owner@example.com", has2fa=True)
    org = await create_org(pool, "acme", owner["id"])
    senders = [await token_for(pool, owner["id"])]
    for n in range(INVITES_PER_ORGANIZATION.limit // INVITES_PER_ACCOUNT.limit):
        manager = await create_user(pool, f"manager{n}@example.com", has2fa=True)
        await add_member(pool, org["id"], manager, role="manager")
        senders.append(await token_for(pool, manager["id"]))
    sent = 0
    for n in range(INVITES_PER_ACCOUNT.limit):
        assert (await _invite(client, senders[0], f"stranger{n}@example.com")).status == 201
        sent += 1
    over = await _invite(client, senders[0], "one-more@example.com")
    _refused(over)
    assert "50 invitations today" in (await over.json())["detail"]

    # The organization's cap holds across its managers.
    for index, headers in enumerate(senders[1:], start=1):
        for n in range(INVITES_PER_ACCOUNT.limit):
            if sent == INVITES_PER_ORGANIZATION.limit:
                break
            response = await _invite(client, headers, f"s{index}-{n}@example.com")
            assert response.status == 201, await response.text()
            sent += 1
    over = await _invite(client, senders[-1], "last@example.com")
    _refused(over)
    assert "This organization" in (await over.json())["detail"]
    assert await _outbox(pool) == INVITES_PER_ORGANIZATION.limit


@pytest.fixture
async def proxied_client(aiohttp_client, settings, pool):
    from api.app import create_app

    return await aiohttp_client(create_app(settings.replace(trusted_proxies=("127.0.0.1",))))


async def test_sign_ups_are_capped_per_address(proxied_client, pool) -> None:
    def register(n: int, address: str):
        return proxied_client.post(
            "/api/0/auth/register/",
            json={"email": f"u{n}@example.com", "password": PASSWORD, "name": "U"},
            headers={"X-Forwarded-For": address},
        )

    for n in range(SIGN_UPS_PER_ADDRESS.limit):
        assert (await register(n, "203.0.113.7")).status == 201
    over = await register(99, "203.0.113.7")
    _refused(over)
    assert "network address" in (await over.json())["detail"]
    assert (await register(100, "198.51.100.1")).status == 201  # another address
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from users") == SIGN_UPS_PER_ADDRESS.limit + 1


async def test_text_messages_are_capped_per_account_and_per_number(client, pool) -> None:
    phone = "+14155550123"
    ada = await create_user(pool, "ada@example.com")
    bob = await create_user(pool, "bob@example.com")
    ada_h, bob_h = await token_for(pool, ada["id"]), await token_for(pool, bob["id"])
    for _ in range(SMS_PER_NUMBER.limit):
        assert (await client.post(SMS, json={"phone": phone}, headers=ada_h)).status == 200
    # Another account cannot text the same number any more this hour...
    over = await client.post(SMS, json={"phone": phone}, headers=bob_h)
    _refused(over)
    assert "this number" in (await over.json())["detail"]
    # ...and one account cannot text many numbers beyond its own cap.
    for n in range(SMS_PER_ACCOUNT.limit - 1):
        response = await client.post(SMS, json={"phone": f"+1415555020{n}"}, headers=bob_h)
        assert response.status == 200, await response.text()
    over = await client.post(SMS, json={"phone": "+14155550299"}, headers=bob_h)
    _refused(over)
    wait = wait_in_words(int(over.headers["Retry-After"]))
    assert (await over.json())["detail"] == f"Too many text messages sent; try again in {wait}."
