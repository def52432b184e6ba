"""The audit log through the HTTP API: newest first, by event, cursor pages, who may read it."""

from __future__ import annotations

import re

from db import audit
from db.audit import Actor
from tests.factories import (
    add_member,
    create_org,
    create_user,
    owner_and_org,
    owner_org_and_token,
    token_for,
)


async def write_entries(pool, org_id: int, count: int, actor_id: int) -> list[int]:
    ids = []
    async with pool.acquire() as conn:
        for i in range(count):
            ids.append(
                await audit.record(
                    conn,
                    organization_id=org_id,
                    event="member.pending" if i % 2 else "member.invite",
                    actor=Actor(user_id=actor_id, label="owner@example.com", ip_address="10.0.0.1"),
                    target_member_id=1000 + i,
                    target_user_id=2000 + i,
                    data={"email": f"user{i}@example.com"},
                )
            )
    return ids


def next_cursor(link: str) -> str | None:
    match = re.search(r'rel="next"; results="true"; cursor="([^"]+)"', link)
    return match.group(1) if match else None


async def test_newest_first_with_filter_and_pages(client, pool) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", name="Olive")
    other = await create_org(pool, "other", owner["id"])
    ids = await write_entries(pool, org["id"], 7, owner["id"])
    await write_entries(pool, other["id"], 2, owner["id"])
    headers = await token_for(pool, owner["id"])

    response = await client.get("/api/0/organizations/acme/audit-logs/", headers=headers)
    assert response.status == 200
    body = await response.json()
    assert [int(r["id"]) for r in body["rows"]] == sorted(ids, reverse=True)
    assert set(body["options"]) >= {"org.edit", "member.pending", "member.invite"}
    first = body["rows"][-1]
    assert first == {
        "id": str(ids[0]),
        "event": "member.invite",
        "actor": {
            "type": "user",
            "id": str(owner["id"]),
            "email": "owner@example.com",
            "name": "Olive",
            "tokenId": None,
        },
        "actorLabel": "owner@example.com",
        "targetUser": {"id": "2000", "email": "user0@example.com"},
        "targetMember": "1000",
        "ipAddress": "10.0.0.1",
        "data": {"email": "user0@example.com"},
        "dateCreated": first["dateCreated"],
    }

    seen: list[int] = []
    url = "/api/0/organizations/acme/audit-logs/?event=member.pending&per_page=2"
    cursor: str | None = ""
    while cursor is not None:
        page = await client.get(url + (f"&cursor={cursor}" if cursor else ""), headers=headers)
        rows = (await page.json())["rows"]
        assert all(r["event"] == "member.pending" for r in rows)
        seen.extend(int(r["id"]) for r in rows)
        cursor = next_cursor(page.headers["Link"])
    assert seen == [i for i in sorted(ids, reverse=True) if ids.index(i) % 2]


async def test_only_owners_and_managers(client, pool) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    for role, status in (("manager", 200), ("admin", 403), ("member", 403), ("billing", 403)):
        user = await create_user(pool, f"{role}@example.com")
        await add_member(pool, org["id"], user, role=role)
        response = await client.get(
            "/api/0/organizations/acme/audit-logs/", headers=await token_for(pool, user["id"])
        )
        assert response.status == status, role
    stranger = await create_user(pool, "stranger@example.com")
    response = await client.get(
        "/api/0/organizations/acme/audit-logs/", headers=await token_for(pool, stranger["id"])
    )
    assert response.status == 404


async def test_bad_queries_are_400(client, pool) -> None:
    owner, _, headers = await owner_org_and_token(pool, "acme", "owner@example.com")
    for query in (
        "event=nope",
        "cursor=abc",
        "cursor=1.2.3",
        "cursor=9999999999999999999.1",
        "cursor=-5",
        "per_page=0",
        "per_page=100000",
    ):
        response = await client.get(
            f"/api/0/organizations/acme/audit-logs/?{query}", headers=headers
        )
        assert response.status == 400, query
        assert (await response.json())["detail"]


async def test_switch_entries_are_listed(client, pool, redis_url) -> None:
    from jobs.broker import broker

    owner, _, headers = await owner_org_and_token(pool, "acme", "owner@example.com", has2fa=True)
    for value in (True, False):
        await client.put("/api/0/organizations/acme/", json={"require2FA": value}, headers=headers)
    broker.flush("enforcement")
    response = await client.get(
        "/api/0/organizations/acme/audit-logs/?event=org.edit", headers=headers
    )
    rows = (await response.json())["rows"]
    assert [r["data"] for r in rows] == [{"require_2fa": "to False"}, {"require_2fa": "to True"}]
    assert rows[0]["actor"]["tokenId"] is not None
