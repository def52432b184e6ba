"""The webhooks page (owners): add a webhook (its secret shown once), see each one's latest
deliveries with their status and the receiver's last answer, delete one."""

from __future__ import annotations

from tests.factories import add_member, create_user, owner_and_org, sign_in

HOOKS = "/organizations/acme/webhooks/"


async def test_add_see_deliveries_and_delete(client, pool) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    assert (await sign_in(client, "owner@example.com")).status == 200
    assert "No webhooks yet." in await (await client.get(HOOKS)).text()

    refused = await client.post(HOOKS, data={"url": "ftp://nope", "scope": "all"})
    assert refused.status == 400 and 'value="ftp://nope"' in await refused.text()
    created = await client.post(
        HOOKS,
        data={"url": "https://hooks.example.com/r2fa", "scope": "some", "events": "member.pending"},
    )
    text = await created.text()
    assert created.status == 201 and "Its secret is shown this once" in text
    assert "whsec_" in text
    async with pool.acquire() as conn:
        hook_id = await conn.fetchval("select id from webhooks")
        audit_id = await conn.fetchval("select max(id) from audit_log")
        await conn.execute(
            """insert into webhook_deliveries (webhook_id, audit_log_id, event, status, attempts,
                                               last_status, last_body, delivered_at)
               values ($1, $2, 'member.pending', 'delivered', 2, 200, 'thanks', now())""",
            hook_id,
            audit_id,
        )
    page = await (await client.get(HOOKS)).text()
    assert "whsec_" not in page  # shown once only
    assert "https://hooks.example.com/r2fa" in page and "member.pending" in page
    assert "delivered" in page and "200" in page and "thanks" in page

    deleted = await client.post(f"{HOOKS}{hook_id}/delete/")
    assert "The webhook to https://hooks.example.com/r2fa was deleted." in await deleted.text()
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from webhooks") == 0

    # Managers do not see the page (as the API: owners only).
    manager = await create_user(pool, "manager@example.com")
    await add_member(pool, org["id"], manager, role="manager")
    assert (await sign_in(client, "manager@example.com")).status == 200
    assert (await client.get(HOOKS)).status == 403
    settings_page = await (await client.get("/organizations/acme/settings/")).text()
    assert "Add a webhook" not in settings_page
