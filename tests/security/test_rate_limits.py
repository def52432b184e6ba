"""Fair rate limits (issue 10, point 6), against the real app with requests in parallel: each
limit counts atomically, password attempts are keyed by (client address, account), the client
address is believed from X-Forwarded-For only through TRUSTED_PROXIES, resends are keyed by
(organization, member) after the visibility check, and accept links are limited per address."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from api.forwarded import client_address
from require2fa.accounts import LOGIN_LIMIT
from require2fa.invitations import ACCEPT_LIMIT, REINVITE_LIMIT
from tests.factories import (
    PASSWORD,
    add_member,
    create_user,
    owner_and_org,
    remove_for_2fa,
    token_for,
)

LOGIN = "/api/0/auth/login/"


def login(client, email: str, password: str, address: str | None = None):
    headers = {"X-Forwarded-For": address} if address else None
    return client.post(LOGIN, json={"email": email, "password": password}, headers=headers)


@pytest.fixture
async def proxied_client(aiohttp_client, settings, pool):
    """The app behind a reverse proxy on 127.0.0.1 (the test client's address)."""
    from api.app import create_app

    return await aiohttp_client(create_app(settings.replace(trusted_proxies=("127.0.0.1",))))


async def statuses(requests) -> list[int]:
    answers = await asyncio.gather(*requests)
    for answer in answers:
        assert "detail" in await answer.json() or answer.status < 400
    return sorted(answer.status for answer in answers)


async def test_parallel_wrong_passwords_check_exactly_the_limit(client, pool) -> None:
    await create_user(pool, "ada@example.com")
    found = await statuses([login(client, "ada@example.com", f"wrong {n}") for n in range(40)])
    assert found == [401] * LOGIN_LIMIT.limit + [429] * (40 - LOGIN_LIMIT.limit)
    limited = await login(client, "ada@example.com", PASSWORD)
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1


async def test_failures_against_one_account_never_refuse_another(client, pool) -> None:
    await create_user(pool, "ada@example.com")
    await create_user(pool, "bob@example.com")
    await statuses([login(client, "ada@example.com", "wrong") for _ in range(60)])
    await statuses([login(client, f"nobody{n}@example.com", "wrong") for n in range(60)])
    assert (await login(client, "bob@example.com", PASSWORD)).status == 200


async def test_forwarded_for_is_ignored_without_trusted_proxies(client, pool) -> None:
    await create_user(pool, "ada@example.com")
    await statuses(
        [login(client, "ada@example.com", "wrong", "203.0.113.1") for _ in range(LOGIN_LIMIT.limit)]
    )
    # Another claimed address changes nothing: the connecting address is the client's.
    assert (await login(client, "ada@example.com", PASSWORD, "203.0.113.2")).status == 429


async def test_behind_a_trusted_proxy_each_client_has_its_own_count(proxied_client, pool):
    client = proxied_client
    await create_user(pool, "ada@example.com")
    found = await statuses(
        [login(client, "ada@example.com", "wrong", "203.0.113.1") for _ in range(30)]
    )
    assert found.count(401) == LOGIN_LIMIT.limit
    # The attacker's failures do not lock Ada out from her own address...
    assert (await login(client, "ada@example.com", PASSWORD, "198.51.100.7")).status == 200
    # ...and the attacker cannot escape their count by writing addresses of their own on the
    # left: the proxy appends the real one, and the rightmost untrusted address is believed.
    spoofed = await login(client, "ada@example.com", PASSWORD, "198.51.100.7, 203.0.113.1")
    assert spoofed.status == 429


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.1"], "203.0.113.1"),
        ("127.0.0.1", ["198.51.100.7, 203.0.113.1"], "203.0.113.1"),
        ("127.0.0.1", ["203.0.113.1, 10.0.0.5"], "203.0.113.1"),
        ("127.0.0.1", ["203.0.113.1", "10.0.0.5"], "203.0.113.1"),
        ("127.0.0.1", ["10.0.0.6, 10.0.0.5"], "10.0.0.6"),
        ("127.0.0.1", ["203.0.113.1, not-an-address, 10.0.0.5"], "10.0.0.5"),
        ("127.0.0.1", ["2001:db8::1"], "2001:db8::1"),
        ("192.0.2.1", ["203.0.113.1"], "192.0.2.1"),  # an untrusted peer: its header ignored
    ],
)
def test_client_address(peer: str, forwarded: list[str], expected: str) -> None:
    networks = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")]
    assert client_address(peer, forwarded, networks) == expected


async def test_resend_is_limited_per_organization_and_member(client, pool, settings) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    other_owner, _ = await owner_and_org(pool, "evil", "eve@example.com", has2fa=True)
    alice = await create_user(pool, "alice@example.com")
    member_id = await add_member(pool, org["id"], alice)
    await remove_for_2fa(pool, member_id, settings)

    # The owner of another organization cannot spend Acme's allowance for Alice.
    evil = await token_for(pool, other_owner["id"])
    url = f"/api/0/organizations/evil/members/{member_id}/"
    found = await statuses(
        [client.put(url, json={"reinvite": True}, headers=evil) for _ in range(10)]
    )
    assert found == [404] * 10

    # Acme's owner, in parallel: exactly the limit goes through.
    mine = await token_for(pool, owner["id"])
    url = f"/api/0/organizations/acme/members/{member_id}/"
    found = await statuses(
        [client.put(url, json={"reinvite": True}, headers=mine) for _ in range(12)]
    )
    assert found == [200] * REINVITE_LIMIT.limit + [429] * (12 - REINVITE_LIMIT.limit)


async def test_accept_links_are_limited_per_address(proxied_client, pool, settings) -> None:
    client = proxied_client
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    member_id = await add_member(pool, org["id"], await create_user(pool, "alice@example.com"))
    await remove_for_2fa(pool, member_id, settings)

    def look(n: int, address: str):
        # Unknown members and wrong tokens alike: both are the same 400.
        member = member_id if n % 2 else member_id + 1000 + n
        return client.get(
            f"/api/0/accept-invite/{member}/wrong-{n}/", headers={"X-Forwarded-For": address}
        )

    total = ACCEPT_LIMIT.limit + 15
    found = await statuses([look(n, "203.0.113.1") for n in range(total)])
    assert found == [400] * ACCEPT_LIMIT.limit + [429] * 15
    limited = await look(1, "203.0.113.1")
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    # Another address is not held back; its bad links answer as any bad link does.
    for n in (1, 2):
        other = await look(n, "198.51.100.7")
        assert other.status == 400 and (await other.json())["detail"] == "Invalid invite code"


async def test_the_client_address_is_what_sessions_record(proxied_client, pool) -> None:
    await create_user(pool, "ada@example.com")
    signed = await login(proxied_client, "ada@example.com", PASSWORD, "198.51.100.7")
    assert signed.status == 200
    listed = await proxied_client.get("/api/0/users/me/sessions/")
    assert [row["ipAddress"] for row in await listed.json()] == ["198.51.100.7"]
