"""`PUT members/{id}/` (issue 25, point 6): a write that changes nothing records nothing (no
`member.edit`, no webhook delivery), and a plain member may only edit their own settings."""

from __future__ import annotations

from tests.factories import add_member, create_org, create_user, token_for


async def _edits(pool) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("select count(*) from audit_log where event = 'member.edit'")


async def _deliveries(pool) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("select count(*) from webhook_deliveries")


async def _acme(pool):
    owner = await create_user(pool, "owner@example.com", has2fa=True)
    org = await create_org(pool, "acme", owner["id"], teams=("ops",))
    async with pool.acquire() as conn:
        owner_member = await conn.fetchval("select id from members where user_id = $1", owner["id"])
        await conn.execute(
            """insert into webhooks (organization_id, url, events, secret_encrypted)
               values ($1, 'https://hooks.example/x', '{*}', 'x')""",
            org["id"],
        )
    return org, owner_member, await token_for(pool, owner["id"])


async def test_a_plain_member_cannot_touch_someone_elses_row(client, pool) -> None:
    org, owner_member, _owner = await _acme(pool)
    mallory = await create_user(pool, "mallory@example.com", has2fa=True)
    await add_member(pool, org["id"], mallory)
    headers = await token_for(pool, mallory["id"])
    for _ in range(3):
        response = await client.put(
            f"/api/0/organizations/acme/members/{owner_member}/", json={}, headers=headers
        )
        assert response.status == 403
        assert (await response.json())["detail"]
    assert await _edits(pool) == 0
    assert await _deliveries(pool) == 0


async def test_a_write_that_changes_nothing_records_nothing(client, pool) -> None:
    org, _owner_member, owner = await _acme(pool)
    alice = await create_user(pool, "alice@example.com", has2fa=True)
    member_id = await add_member(pool, org["id"], alice, teams=("ops",), settings={"weekly": True})
    alice_headers = await token_for(pool, alice["id"])
    url = f"/api/0/organizations/acme/members/{member_id}/"

    same = [
        (owner, {}),
        (owner, {"role": "member"}),
        (owner, {"teams": ["ops"]}),
        (owner, {"role": "member", "teams": ["ops", "ops"]}),
        (alice_headers, {}),
        (alice_headers, {"settings": {"weekly": True}}),
    ]
    for headers, body in same:
        response = await client.put(url, json=body, headers=headers)
        assert response.status == 200, (body, await response.text())
        assert (await response.json())["role"] == "member"
    assert await _edits(pool) == 0
    assert await _deliveries(pool) == 0

    response = await client.put(url, json={"role": "admin", "teams": ["ops"]}, headers=owner)
    assert response.status == 200
    assert (await response.json())["role"] == "admin"
    async with pool.acquire() as conn:
        data = await conn.fetchval("select data from audit_log where event = 'member.edit'")
    assert data == {"email": "alice@example.com", "role": "admin"}
    assert await _edits(pool) == 1
