"""A per-account limit on password guesses that cannot lock the owner out (issue 25, point 9):
past `LOGIN_ACCOUNT_FAILURES` wrong passwords from all addresses together, each address gets
one attempt on that account per (doubling) turn, and the right password from an address that
has not just failed is checked at once."""

from __future__ import annotations

import asyncio

import pytest

from require2fa.accounts import LOGIN_ACCOUNT_FAILURES, LOGIN_LIMIT
from tests.factories import PASSWORD, create_user

LOGIN = "/api/0/auth/login/"


@pytest.fixture
async def proxied(aiohttp_client, settings, pool):
    from api.app import create_app

    return await aiohttp_client(create_app(settings.replace(trusted_proxies=("127.0.0.1",))))


def _login(client, password: str, address: str):
    return client.post(
        LOGIN,
        json={"email": "owner@example.com", "password": password},
        headers={"X-Forwarded-For": address},
    )


async def test_guesses_from_many_addresses_are_slowed_and_the_owner_still_signs_in(
    proxied, pool
) -> None:
    await create_user(pool, "owner@example.com")
    per_address = LOGIN_LIMIT.limit // 2
    addresses = [f"203.0.113.{n}" for n in range(LOGIN_ACCOUNT_FAILURES.limit // per_address)]
    for address in addresses:  # exactly the account's allowance, spread over the addresses
        for _ in range(per_address):
            assert (await _login(proxied, "wrong", address)).status == 401

    # Past it, each address gets one more check per turn: the guesses are no longer all checked.
    statuses = [(await _login(proxied, "wrong", address)).status for address in addresses]
    assert statuses == [401] * len(addresses)
    slowed = await _login(proxied, "wrong", addresses[0])
    assert slowed.status == 429
    assert int(slowed.headers["Retry-After"]) >= 1
    assert "wrong passwords" in (await slowed.json())["detail"]
    again = await _login(proxied, PASSWORD, addresses[0])  # even the right one waits its turn
    assert again.status == 429

    # The owner from a new address is checked at once and signs in; that clears the count.
    assert (await _login(proxied, PASSWORD, "198.51.100.9")).status == 200
    assert (await _login(proxied, "wrong", addresses[1])).status == 401


async def test_after_the_turn_the_right_password_works_from_the_same_address(proxied, pool) -> None:
    await create_user(pool, "owner@example.com")
    addresses = [f"203.0.113.{n}" for n in range(LOGIN_ACCOUNT_FAILURES.limit // 5)]
    for address in addresses:
        for _ in range(5):
            await _login(proxied, "wrong", address)
    assert (await _login(proxied, "wrong", "192.0.2.1")).status == 401  # takes a turn
    slowed = await _login(proxied, PASSWORD, "192.0.2.1")
    assert slowed.status == 429
    await asyncio.sleep(int(slowed.headers["Retry-After"]))
    assert (await _login(proxied, PASSWORD, "192.0.2.1")).status == 200
