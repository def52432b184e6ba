"""CSRF on the JSON API (issue 10, point 8): a cookie-authenticated write needs a JSON body and,
when the browser names an `Origin`, BASE_URL's; bearer tokens are unaffected."""

from __future__ import annotations

import json

import pytest

from tests.factories import owner_and_org, sign_in, token_for

TEAMS = "/api/0/organizations/alpha/teams/"
BODY = json.dumps({"slug": "evil", "name": "Evil"})


async def _owner_signed_in(client, pool):
    owner, _ = await owner_and_org(pool, "alpha", "owner@example.com")
    assert (await sign_in(client, "owner@example.com")).status == 200
    return owner


async def _team_slugs(pool) -> list[str]:
    async with pool.acquire() as conn:
        return [row["slug"] for row in await conn.fetch("select slug from teams")]


async def test_the_issues_example_is_refused(client, pool) -> None:
    await _owner_signed_in(client, pool)
    response = await client.post(
        TEAMS,
        data=BODY,
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
    )
    assert response.status == 403
    assert response.content_type == "application/json"
    assert (await response.json())["detail"]
    assert await _team_slugs(pool) == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
        {"Content-Type": "application/json", "Origin": "http://evil.example"},
        {"Content-Type": "application/json", "Origin": "null"},
        {"Content-Type": "application/json", "Origin": "http://testserver.evil.example"},
    ],
)
async def test_forgeable_writes_are_refused(client, pool, headers) -> None:
    await _owner_signed_in(client, pool)
    response = await client.post(TEAMS, data=BODY, headers=headers)
    assert response.status == 403, await response.text()
    assert (await response.json())["detail"]
    assert await _team_slugs(pool) == []


async def test_a_bodyless_write_from_another_site_is_refused(client, pool) -> None:
    await _owner_signed_in(client, pool)
    response = await client.post("/api/0/auth/logout/", headers={"Origin": "http://evil.example"})
    assert response.status == 403
    assert (await client.get("/api/0/users/me/")).status == 200  # still signed in


async def test_our_own_pages_requests_pass(client, pool) -> None:
    await _owner_signed_in(client, pool)
    response = await client.post(
        TEAMS,
        data=BODY,
        headers={"Content-Type": "application/json", "Origin": "http://testserver"},
    )
    assert response.status == 201, await response.text()
    # No Origin (a non-browser client with a cookie): the JSON type is enough.
    assert (await client.post(TEAMS, json={"slug": "two", "name": "Two"})).status == 201
    assert sorted(await _team_slugs(pool)) == ["evil", "two"]


async def test_bearer_tokens_are_unaffected(client, pool) -> None:
    owner, _ = await owner_and_org(pool, "alpha", "owner@example.com")
    headers = {
        **(await token_for(pool, owner["id"])),
        "Content-Type": "text/plain",
        "Origin": "http://evil.example",
    }
    response = await client.post(TEAMS, data=BODY, headers=headers)
    # Not refused as forged: the body is read as JSON as before.
    assert response.status == 201, await response.text()
