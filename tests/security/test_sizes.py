"""Size caps (issue 10, point 9): a member's settings (16 KB), names, team lists, emails and the
request body; each refusal is a 400 (413 for the body) whose `detail` names the limit."""

from __future__ import annotations

import pytest

from tests.factories import (
    add_member,
    create_user,
    owner_and_org,
    owner_org_and_token,
    sign_in,
    token_for,
)

ORG = "/api/0/organizations/alpha"


async def _refused(response, *words: str) -> str:
    assert response.status == 400, await response.text()
    detail = (await response.json())["detail"]
    for word in words:
        assert word in detail, detail
    return detail


async def test_settings_over_16_kb_are_refused_and_not_stored(client, pool) -> None:
    owner, org = await owner_and_org(pool, "alpha", "owner@example.com")
    ada = await create_user(pool, "ada@example.com")
    member_id = await add_member(pool, org["id"], ada)
    assert (await sign_in(client, "ada@example.com")).status == 200
    url = f"{ORG}/members/{member_id}/"

    big = {"note": "x" * (16 * 1024)}
    await _refused(await client.put(url, json={"settings": big}), "16384", "16 KB")
    async with pool.acquire() as conn:
        assert await conn.fetchval("select settings from members where id = $1", member_id) in (
            None,
            {},
            "{}",
        )
    fits = {"note": "x" * (16 * 1024 - 20)}
    assert (await client.put(url, json={"settings": fits})).status == 200


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/organizations/", {"name": "n" * 201, "slug": "beta"}, ("name", "200")),
        (f"{ORG}/teams/", {"name": "n" * 201, "slug": "t"}, ("name", "200")),
        (f"{ORG}/members/", {"email": "a" * 250 + "@example.com"}, ("email", "254")),
        (f"{ORG}/members/", {"email": "b@example.com", "teams": ["t"] * 101}, ("teams", "100")),
        (f"{ORG}/members/", {"email": "c@example.com", "teams": ["t" * 51]}, ("teams", "50")),
        ("/api-tokens/", {"name": "n" * 201}, ("name", "200")),
    ],
)
async def test_names_emails_and_team_lists_are_capped(client, pool, path, body, words) -> None:
    owner, _, headers = await owner_org_and_token(pool, "alpha", "owner@example.com")
    url = path if path.startswith(ORG) else "/api/0" + path
    await _refused(await client.post(url, json=body, headers=headers), *words)


async def test_registering_with_a_huge_email_says_the_limit(client) -> None:
    response = await client.post(
        "/api/0/auth/register/",
        json={"email": "a" * 300 + "@example.com", "password": "long enough password"},
    )
    await _refused(response, "254")


async def test_a_body_over_the_cap_is_413_json(client, pool) -> None:
    owner, _ = await owner_and_org(pool, "alpha", "owner@example.com")
    headers = {**(await token_for(pool, owner["id"])), "Content-Type": "application/json"}
    body = '{"name": "' + "n" * (200 * 1024) + '"}'
    response = await client.post(f"{ORG}/teams/", data=body, headers=headers)
    assert response.status == 413
    assert "128 KB" in (await response.json())["detail"]
