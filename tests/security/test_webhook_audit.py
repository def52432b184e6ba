"""Webhook URLs in the audit log (issue 25, point 7): `webhook.create` and `webhook.delete`
keep the URL's host only, so a manager (who may read the audit log but not the webhooks) never
sees a path, query or user info that carries the receiver's credentials."""

from __future__ import annotations

import json

from tests.factories import add_member, create_org, create_user, token_for

URL = "https://hooks.example.com:8443/in/s3cret-path?token=abc123&key=hunter2"


async def test_managers_see_the_host_only(client, pool) -> None:
    owner = await create_user(pool, "owner@example.com", has2fa=True)
    org = await create_org(pool, "acme", owner["id"])
    manager = await create_user(pool, "manager@example.com", has2fa=True)
    await add_member(pool, org["id"], manager, role="manager")
    owner_headers = await token_for(pool, owner["id"])
    manager_headers = await token_for(pool, manager["id"])

    created = await client.post(
        "/api/0/organizations/acme/webhooks/",
        json={"url": URL, "events": ["*"]},
        headers=owner_headers,
    )
    assert created.status == 201, await created.text()
    hook = (await created.json())["id"]
    assert (
        await client.get("/api/0/organizations/acme/webhooks/", headers=manager_headers)
    ).status == 403
    deleted = await client.delete(
        f"/api/0/organizations/acme/webhooks/{hook}/", headers=owner_headers
    )
    assert deleted.status == 204

    for headers in (manager_headers, owner_headers):
        log = await client.get("/api/0/organizations/acme/audit-logs/", headers=headers)
        assert log.status == 200
        rows = [r for r in (await log.json())["rows"] if r["event"].startswith("webhook.")]
        assert [r["event"] for r in rows] == ["webhook.delete", "webhook.create"]
        assert all(r["data"]["host"] == "hooks.example.com:8443" for r in rows)
        text = json.dumps(rows)
        for secret in ("hunter2", "s3cret-path", "abc123", "/in/"):
            assert secret not in text
    async with pool.acquire() as conn:
        stored = await conn.fetchval(
            "select string_agg(data::text, ' ') from audit_log where event like 'webhook.%'"
        )
    assert "hunter2" not in stored and "s3cret-path" not in stored and "abc123" not in stored
