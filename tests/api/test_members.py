"""Members through the HTTP API: invite, list with filters and cursors, get, update, remove."""

from __future__ import annotations

import asyncio
import re

from tests.factories import add_member, create_org, create_user, link_in, owner_and_org, token_for


async def _org_with_owner(pool, *, teams=("backend", "frontend")):
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True, teams=teams)
    return owner, org, await token_for(pool, owner["id"])


async def test_invite_writes_member_audit_and_email_in_one_go(client, pool) -> None:
    _, org, headers = await _org_with_owner(pool)
    response = await client.post(
        "/api/0/organizations/acme/members/",
        json={"email": "New@Example.com", "role": "admin", "teams": ["backend"]},
        headers=headers,
    )
    assert response.status == 201
    member = await response.json()
    assert member["email"] == "new@example.com"
    assert member["pending"] is True and member["pendingReason"] == "invite"
    assert member["teams"] == ["backend"] and member["role"] == "admin"
    assert member["user"] is None
    async with pool.acquire() as conn:
        audit = await conn.fetch(
            "select event, data from audit_log where organization_id = $1", org["id"]
        )
        email = await conn.fetchrow(
            "select * from email_outbox where member_id = $1", int(member["id"])
        )
    assert [row["event"] for row in audit] == ["member.invite"]
    assert audit[0]["data"]["email"] == "new@example.com"
    assert email["template"] == "invite" and email["to_address"] == "new@example.com"
    assert re.fullmatch(
        rf"http://testserver/accept/{member['id']}/[\w-]+/", link_in(email["context"])
    )

    again = await client.post(
        "/api/0/organizations/acme/members/", json={"email": "new@example.com"}, headers=headers
    )
    assert again.status == 409


async def test_invite_refusals(client, pool) -> None:
    owner, org, headers = await _org_with_owner(pool)
    plain = await create_user(pool, "plain@example.com", has2fa=True)
    await add_member(pool, org["id"], plain)
    manager = await create_user(pool, "manager@example.com", has2fa=True)
    await add_member(pool, org["id"], manager, role="manager")
    url = "/api/0/organizations/acme/members/"

    as_member = await client.post(
        url, json={"email": "x@example.com"}, headers=await token_for(pool, plain["id"])
    )
    assert as_member.status == 403
    as_manager = await client.post(
        url,
        json={"email": "x@example.com", "role": "owner"},
        headers=await token_for(pool, manager["id"]),
    )
    assert as_manager.status == 403
    bad_team = await client.post(
        url, json={"email": "x@example.com", "teams": ["nope"]}, headers=headers
    )
    assert bad_team.status == 400
    assert (await bad_team.json())["errors"]["teams"]
    bad_email = await client.post(url, json={"email": "not-an-email"}, headers=headers)
    assert bad_email.status == 400
    assert "email" in (await bad_email.json())["errors"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from members") == 3  # nothing half-written


async def test_list_filters_and_cursor_pagination(client, pool) -> None:
    _, org, headers = await _org_with_owner(pool)
    for i in range(5):
        user = await create_user(pool, f"m{i}@example.com", has2fa=i % 2 == 0)
        await add_member(pool, org["id"], user)
    await client.post(
        "/api/0/organizations/acme/members/", json={"email": "inv@example.com"}, headers=headers
    )
    url = "/api/0/organizations/acme/members/"

    seen: list[str] = []
    next_url = f"{url}?per_page=2"
    while next_url:
        response = await client.get(next_url, headers=headers)
        assert response.status == 200
        seen += [m["email"] for m in await response.json()]
        link = response.headers["Link"]
        match = re.search(r'<([^>]+)>; rel="next"; results="true"', link)
        next_url = match.group(1).replace(str(client.make_url("")), "") if match else ""
    assert len(seen) == 7 and len(set(seen)) == 7

    no2fa = await (await client.get(url, params={"query": "has2fa:false"}, headers=headers)).json()
    assert sorted(m["email"] for m in no2fa) == ["m1@example.com", "m3@example.com"]
    assert all(m["user"]["has2fa"] is False for m in no2fa)
    pending = await (await client.get(url, params={"query": "is:pending"}, headers=headers)).json()
    assert [m["email"] for m in pending] == ["inv@example.com"]
    owners = await (await client.get(url, params={"query": "role:owner"}, headers=headers)).json()
    assert [m["email"] for m in owners] == ["owner@example.com"]
    bad = await client.get(url, params={"query": "color:blue"}, headers=headers)
    assert bad.status == 400 and "detail" in await bad.json()
    bad_cursor = await client.get(url, params={"cursor": "abc"}, headers=headers)
    assert bad_cursor.status == 400


async def test_pages_stay_in_their_organization_with_has2fa(client, pool) -> None:
    """Cursor pages read the organization's own rows: an organization created before it (whose
    members interleave with its own) and one created after it do not leak in, and has2fa is each
    member's own."""
    other_owner, beside = await owner_and_org(pool, "beside", "other@example.com", has2fa=True)
    _, org, headers = await _org_with_owner(pool)
    expected = {"owner@example.com": True}
    for i in range(6):
        user = await create_user(pool, f"m{i}@example.com", has2fa=i % 3 == 0)
        await add_member(pool, org["id"], user)
        expected[f"m{i}@example.com"] = i % 3 == 0
        stranger = await create_user(pool, f"s{i}@example.com", has2fa=i % 2 == 0)
        await add_member(pool, beside["id"], stranger)
    after = await create_org(pool, "after", other_owner["id"])
    await add_member(pool, after["id"], await create_user(pool, "late@example.com"))

    seen: dict[str, bool] = {}
    ids: list[int] = []
    next_url = "/api/0/organizations/acme/members/?per_page=3"
    while next_url:
        response = await client.get(next_url, headers=headers)
        assert response.status == 200
        for member in await response.json():
            seen[member["email"]] = member["user"]["has2fa"]
            ids.append(int(member["id"]))
        match = re.search(r'<([^>]+)>; rel="next"; results="true"', response.headers["Link"])
        next_url = match.group(1).replace(str(client.make_url("")), "") if match else ""
    assert seen == expected
    assert ids == sorted(ids)


async def test_update_role_teams_and_own_settings(client, pool) -> None:
    _, org, headers = await _org_with_owner(pool)
    user = await create_user(pool, "m@example.com", has2fa=True)
    member_id = await add_member(pool, org["id"], user, teams=("backend",))
    url = f"/api/0/organizations/acme/members/{member_id}/"

    changed = await client.put(
        url, json={"role": "manager", "teams": ["frontend"]}, headers=headers
    )
    assert changed.status == 200
    body = await changed.json()
    assert body["role"] == "manager" and body["teams"] == ["frontend"]

    others_settings = await client.put(url, json={"settings": {"deploy": "never"}}, headers=headers)
    assert others_settings.status == 403
    own = await client.put(
        url, json={"settings": {"deploy": "never"}}, headers=await token_for(pool, user["id"])
    )
    assert own.status == 200
    assert (await own.json())["settings"] == {"deploy": "never"}
    async with pool.acquire() as conn:
        events = await conn.fetch("select event from audit_log order by id")
    assert [row["event"] for row in events] == ["member.edit", "member.edit"]


async def test_last_owner_cannot_leave_or_be_demoted(client, pool) -> None:
    owner, org, headers = await _org_with_owner(pool)
    async with pool.acquire() as conn:
        owner_member = await conn.fetchval("select id from members where user_id = $1", owner["id"])
    url = f"/api/0/organizations/acme/members/{owner_member}/"
    assert (await client.put(url, json={"role": "member"}, headers=headers)).status == 409
    assert (await client.delete(url, headers=headers)).status == 409


async def test_remove_member(client, pool) -> None:
    _, org, headers = await _org_with_owner(pool)
    user = await create_user(pool, "m@example.com", has2fa=True)
    member_id = await add_member(pool, org["id"], user)
    url = f"/api/0/organizations/acme/members/{member_id}/"
    assert (await client.delete(url, headers=headers)).status == 204
    assert (await client.get(url, headers=headers)).status == 404
    async with pool.acquire() as conn:
        event = await conn.fetchval("select event from audit_log")
    assert event == "member.remove"


async def test_two_owners_demoting_each_other_at_once_leave_one(client, pool) -> None:
    first, org, first_headers = await _org_with_owner(pool)
    second = await create_user(pool, "second@example.com", has2fa=True)
    second_id = await add_member(pool, org["id"], second, role="owner")
    second_headers = await token_for(pool, second["id"])
    async with pool.acquire() as conn:
        first_id = await conn.fetchval("select id from members where user_id = $1", first["id"])
    url = "/api/0/organizations/acme/members/{}/"
    answers = await asyncio.gather(
        client.put(url.format(second_id), json={"role": "member"}, headers=first_headers),
        client.put(url.format(first_id), json={"role": "member"}, headers=second_headers),
    )
    assert sorted(a.status for a in answers) in ([200, 409], [200, 403])
    async with pool.acquire() as conn:
        owners = await conn.fetchval("select count(*) from members where role = 'owner'")
    assert owners == 1
