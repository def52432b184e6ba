"""The webhooks page (owners): add a webhook (its secret shown once), see each one's latest
deliveries with their status and the receiver's last answer, ping it, redeliver a delivery,
turn it off and on again, delete one."""

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


async def _webhook_with_delivery(client, pool) -> tuple[int, int]:
    """A webhook of acme added through the page; its first delivery (of its own
    `webhook.create`) as the receiver would have taken it."""
    created = await client.post(HOOKS, data={"url": "https://hooks.example.com/r2fa"})
    assert created.status == 201
    async with pool.acquire() as conn:
        hook_id = await conn.fetchval("select id from webhooks")
        delivery_id = await conn.fetchval(
            """update webhook_deliveries
                  set status = 'delivered', attempts = 1, last_status = 200, last_body = 'ok',
                      delivered_at = now()
                where webhook_id = $1 and event = 'webhook.create'
            returning id""",
            hook_id,
        )
    return hook_id, delivery_id


async def _deliveries(pool, hook_id: int) -> list[tuple[str, str]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "select event, status from webhook_deliveries where webhook_id = $1 order by id",
            hook_id,
        )
    return [(row["event"], row["status"]) for row in rows]


async def test_ping_redeliver_disable_and_enable(client, pool) -> None:
    await owner_and_org(pool, "acme", "owner@example.com")
    assert (await sign_in(client, "owner@example.com")).status == 200
    hook_id, delivery_id = await _webhook_with_delivery(client, pool)
    page = await (await client.get(HOOKS)).text()
    for button in ("Ping", "Redeliver", "Disable"):
        assert f">{button}</button>" in page

    pinged = await client.post(f"{HOOKS}{hook_id}/ping/", allow_redirects=False)
    assert pinged.status == 303 and pinged.headers["Location"] == HOOKS
    page = await (await client.get(HOOKS)).text()
    assert "A ping to https://hooks.example.com/r2fa was queued" in page
    assert await _deliveries(pool, hook_id) == [("webhook.create", "delivered"), ("ping", "queued")]
    assert "<code>ping</code>" in page  # the new delivery is listed with the others

    redelivered = await client.post(f"{HOOKS}{hook_id}/deliveries/{delivery_id}/redeliver/")
    text = await redelivered.text()
    assert redelivered.status == 200 and str(redelivered.url).endswith(HOOKS)
    assert "The delivery to https://hooks.example.com/r2fa was queued again." in text
    assert await _deliveries(pool, hook_id) == [("webhook.create", "queued"), ("ping", "queued")]
    # A delivery of no webhook of this path is not found.
    missing = await client.post(f"{HOOKS}{hook_id}/deliveries/{delivery_id + 999}/redeliver/")
    assert missing.status == 404

    disabled = await client.post(f"{HOOKS}{hook_id}/active/", data={"active": "false"})
    text = await disabled.text()
    assert "The webhook to https://hooks.example.com/r2fa is off" in text
    assert ">Enable</button>" in text and ">Ping</button>" not in text
    assert ">Redeliver</button>" not in text
    async with pool.acquire() as conn:
        assert await conn.fetchval("select active from webhooks where id = $1", hook_id) is False
        edits = await conn.fetch("select data from audit_log where event = 'webhook.edit'")
    assert [row["data"]["active"] for row in edits] == [False]
    # Its pending deliveries fail, as through the API; a ping of a webhook that is off is refused.
    assert await _deliveries(pool, hook_id) == [("webhook.create", "failed"), ("ping", "failed")]
    refused = await client.post(f"{HOOKS}{hook_id}/ping/")
    assert refused.status == 409
    assert len(await _deliveries(pool, hook_id)) == 2

    enabled = await client.post(f"{HOOKS}{hook_id}/active/", data={"active": "true"})
    text = await enabled.text()
    assert "The webhook to https://hooks.example.com/r2fa is on again." in text
    assert ">Disable</button>" in text and ">Ping</button>" in text
    async with pool.acquire() as conn:
        assert await conn.fetchval("select active from webhooks where id = $1", hook_id) is True


async def test_webhook_buttons_are_for_owners_from_this_site(client, pool) -> None:
    _, org = await owner_and_org(pool, "acme", "owner@example.com")
    assert (await sign_in(client, "owner@example.com")).status == 200
    hook_id, delivery_id = await _webhook_with_delivery(client, pool)
    evil = {"Origin": "http://evil.example"}
    forms = [
        (f"{HOOKS}{hook_id}/ping/", {}),
        (f"{HOOKS}{hook_id}/deliveries/{delivery_id}/redeliver/", {}),
        (f"{HOOKS}{hook_id}/active/", {"active": "false"}),
    ]
    for path, data in forms:
        assert (await client.post(path, data=data, headers=evil)).status == 403

    manager = await create_user(pool, "manager@example.com")
    await add_member(pool, org["id"], manager, role="manager")
    assert (await sign_in(client, "manager@example.com")).status == 200
    for path, data in forms:
        assert (await client.post(path, data=data)).status == 403
    assert await _deliveries(pool, hook_id) == [("webhook.create", "delivered")]
    async with pool.acquire() as conn:
        assert await conn.fetchval("select active from webhooks where id = $1", hook_id) is True
