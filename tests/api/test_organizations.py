"""Organizations and teams through the HTTP API."""

from __future__ import annotations

from tests.factories import create_org, create_user, owner_org_and_token, sign_in, token_for


async def test_create_and_get_organization(client, pool) -> None:
    user = await create_user(pool, "ada@example.com")
    headers = await token_for(pool, user["id"])
    created = await client.post(
        "/api/0/organizations/", json={"name": "Acme Inc", "slug": "acme"}, headers=headers
    )
    assert created.status == 201
    body = await created.json()
    assert body["slug"] == "acme" and body["require2FA"] is False and body["role"] == "owner"

    got = await client.get("/api/0/organizations/acme/", headers=headers)
    assert got.status == 200
    assert (await got.json())["name"] == "Acme Inc"

    again = await client.post(
        "/api/0/organizations/", json={"name": "Other", "slug": "acme"}, headers=headers
    )
    assert again.status == 409
    assert "detail" in await again.json()


async def test_organization_hidden_from_non_members(client, pool) -> None:
    owner = await create_user(pool, "owner@example.com")
    stranger = await create_user(pool, "stranger@example.com")
    await create_org(pool, "acme", owner["id"])
    response = await client.get(
        "/api/0/organizations/acme/", headers=await token_for(pool, stranger["id"])
    )
    assert response.status == 404
    assert (await response.json())["detail"]


async def test_session_sign_in_works_like_a_token(client, pool) -> None:
    await create_user(pool, "ada@example.com")
    response = await sign_in(client, "ada@example.com")
    assert response.status == 200
    created = await client.post("/api/0/organizations/", json={"name": "Acme"})
    assert created.status == 201
    assert (await created.json())["slug"] == "acme"
    me = await client.get("/api/0/users/me/")
    assert (await me.json())["email"] == "ada@example.com"
    await client.post("/api/0/auth/logout/")
    assert (await client.get("/api/0/users/me/")).status == 401


async def test_teams(client, pool) -> None:
    owner, _, headers = await owner_org_and_token(pool, "acme", "owner@example.com")
    made = await client.post(
        "/api/0/organizations/acme/teams/", json={"name": "Backend"}, headers=headers
    )
    assert made.status == 201
    assert (await made.json())["slug"] == "backend"
    dup = await client.post(
        "/api/0/organizations/acme/teams/", json={"name": "Backend"}, headers=headers
    )
    assert dup.status == 409
    listed = await client.get("/api/0/organizations/acme/teams/", headers=headers)
    assert [t["slug"] for t in await listed.json()] == ["backend"]
