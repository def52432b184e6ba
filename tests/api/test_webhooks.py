"""Webhooks through the API and the settings page: subscriptions (owners), the secret shown
once and stored encrypted, the audit entries, the deliveries list, and the URL rules outside
development."""

from __future__ import annotations

import base64
import re

import pytest

from api.app import create_app
from jobs import webhooks as webhook_jobs
from require2fa import webhooks
from tests.factories import (
    PASSWORD,
    add_member,
    create_user,
    owner_and_org,
    owner_org_and_token,
    sign_in,
    token_for,
)
from tests.webhook_receiver import Answer, Receiver

HOOKS = "/api/0/organizations/acme/webhooks/"
SETTINGS = "/organizations/acme/settings/"
PAGE = "/organizations/acme/webhooks/"


@pytest.fixture
async def owner(pool):
    user, org = await owner_and_org(pool, "acme", "owner@acme.test", has2fa=True)
    return {"user": user, "org": org, "headers": await token_for(pool, user["id"])}


@pytest.fixture
async def receiver():
    found = Receiver()
    await found.start()
    yield found
    await found.stop()


async def test_create_list_get_delete_with_their_audit_entries(
    client, pool, owner, settings
) -> None:
    headers = owner["headers"]
    created = await client.post(
        HOOKS,
        json={"url": "https://hooks.example.com/r2fa", "events": ["member.pending"]},
        headers=headers,
    )
    assert created.status == 201, await created.text()
    body = await created.json()
    assert body["url"] == "https://hooks.example.com/r2fa"
    assert body["events"] == ["member.pending"]
    # Standard Webhooks: `whsec_` and the base64 of 32 random bytes.
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", body["secret"])
    assert len(base64.b64decode(body["secret"][6:], validate=True)) == 32
    assert body["active"] is True
    hook_id = body["id"]

    # The secret is shown once; at rest it is encrypted under a key derived from SECRET_KEY.
    listed = await (await client.get(HOOKS, headers=headers)).json()
    assert listed == [{k: v for k, v in body.items() if k != "secret"}]
    one = await (await client.get(f"{HOOKS}{hook_id}/", headers=headers)).json()
    assert one == listed[0]
    async with pool.acquire() as conn:
        stored = await conn.fetchval("select secret_encrypted from webhooks")
    assert body["secret"].encode() not in bytes(stored)
    assert webhooks.decrypt_secret(stored, settings.secret_key) == body["secret"]

    assert (await client.delete(f"{HOOKS}{hook_id}/", headers=headers)).status == 204
    assert (await client.get(f"{HOOKS}{hook_id}/", headers=headers)).status == 404
    assert (await client.delete(f"{HOOKS}{hook_id}/", headers=headers)).status == 404
    assert await (await client.get(HOOKS, headers=headers)).json() == []

    log = await client.get("/api/0/organizations/acme/audit-logs/", headers=headers)
    entries = (await log.json())["rows"]
    assert [e["event"] for e in entries] == ["webhook.delete", "webhook.create"]
    assert entries[1]["data"] == {
        "id": hook_id,
        "host": "hooks.example.com",  # the host only: paths and queries carry credentials
        "events": ["member.pending"],
    }
    assert entries[0]["actor"]["email"] == "owner@acme.test"
    assert {"webhook.create", "webhook.delete"} <= set((await log.json())["options"])


async def test_events_default_to_every_event(client, owner) -> None:
    created = await client.post(
        HOOKS, json={"url": "https://hooks.example.com/"}, headers=owner["headers"]
    )
    assert created.status == 201 and (await created.json())["events"] == ["*"]


async def test_owners_only(client, pool, owner) -> None:
    created = await client.post(
        HOOKS, json={"url": "https://hooks.example.com/"}, headers=owner["headers"]
    )
    hook = f"{HOOKS}{(await created.json())['id']}/"
    for role in ("manager", "admin", "member"):
        user = await create_user(pool, f"{role}@acme.test", has2fa=True)
        await add_member(pool, owner["org"]["id"], user, role=role)
        headers = await token_for(pool, user["id"])
        for method, url in (("GET", HOOKS), ("POST", HOOKS), ("GET", hook), ("DELETE", hook)):
            answer = await client.request(
                method, url, json={"url": "https://x.example.com/"}, headers=headers
            )
            assert answer.status == 403, (role, method, url)
            assert "detail" in await answer.json()
        answer = await client.get(f"{hook}deliveries/", headers=headers)
        assert answer.status == 403

    # Outsiders do not learn that the organization exists; another organization's webhook is
    # not found through this one.
    stranger, other, stranger_headers = await owner_org_and_token(
        pool, "else", "stranger@else.test", has2fa=True
    )
    assert (await client.get(HOOKS, headers=stranger_headers)).status == 404
    else_hook = await client.post(
        "/api/0/organizations/else/webhooks/",
        json={"url": "https://else.example.com/"},
        headers=stranger_headers,
    )
    assert else_hook.status == 201 and other
    else_id = (await else_hook.json())["id"]
    for method in ("GET", "DELETE"):
        answer = await client.request(method, f"{HOOKS}{else_id}/", headers=owner["headers"])
        assert answer.status == 404
    assert (
        await client.get(f"{HOOKS}{else_id}/deliveries/", headers=owner["headers"])
    ).status == 404
    assert (await client.get(HOOKS)).status == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://hooks.example.com/"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "https://user:pw@hooks.example.com/"}, "url"),
        ({"url": "https://hooks.example.com/#x"}, "url"),
        ({"url": "https://hooks.example.com/" + "a" * 2048}, "url"),
        ({"url": "https://hooks.example.com/", "events": []}, "events"),
        ({"url": "https://hooks.example.com/", "events": ["nope"]}, "events"),
        ({"url": "https://hooks.example.com/", "events": ["*", "member.edit"]}, "events"),
        ({"url": "https://hooks.example.com/", "events": "member.edit"}, "events"),
        ({"url": "https://hooks.example.com/", "secret": "mine"}, "secret"),
        ({"events": ["*"]}, "url"),
    ],
)
async def test_bad_subscriptions_are_400(client, owner, body, field) -> None:
    answer = await client.post(HOOKS, json=body, headers=owner["headers"])
    assert answer.status == 400
    assert field in (await answer.json())["errors"]


@pytest.mark.parametrize("webhook_id", ["0", "abc", "99999999999999999999", "-1"])
async def test_bad_ids_are_404(client, owner, webhook_id) -> None:
    answer = await client.get(f"{HOOKS}{webhook_id}/", headers=owner["headers"])
    assert answer.status == 404 and "detail" in await answer.json()


async def test_deliveries_list_status_attempts_and_the_last_answer(
    client, pool, owner, settings, receiver
) -> None:
    created = await client.post(
        HOOKS, json={"url": receiver.url, "events": ["*"]}, headers=owner["headers"]
    )
    hook_id = (await created.json())["id"]
    receiver.answers.append(Answer(500, "oops"))
    await webhook_jobs.dispatch(pool, settings)  # the webhook.create event: 500, retried

    listed = await client.get(f"{HOOKS}{hook_id}/deliveries/", headers=owner["headers"])
    (row,) = await listed.json()
    assert row["event"] == "webhook.create" and row["status"] == "queued"
    assert row["attempts"] == 1 and row["lastResponse"] == {"status": 500, "body": "oops"}
    assert row["deliveredAt"] is None and row["nextAttemptAt"]

    async with pool.acquire() as conn:
        await conn.execute("update webhook_deliveries set next_attempt_at = now()")
    await webhook_jobs.dispatch(pool, settings)
    (row,) = await (
        await client.get(f"{HOOKS}{hook_id}/deliveries/", headers=owner["headers"])
    ).json()
    assert row["status"] == "delivered" and row["attempts"] == 2
    assert row["lastResponse"] == {"status": 200, "body": "ok"} and row["deliveredAt"]
    assert row["id"] == receiver.requests[0].delivery == receiver.requests[1].delivery

    # Cursor pages, newest first.
    async with pool.acquire() as conn:
        from db import audit
        from db.audit import Actor

        for _ in range(5):
            await audit.record(
                conn, organization_id=owner["org"]["id"], event="member.edit", actor=Actor()
            )
    page = await client.get(f"{HOOKS}{hook_id}/deliveries/?per_page=4", headers=owner["headers"])
    first = await page.json()
    assert len(first) == 4 and [r["event"] for r in first] == ["member.edit"] * 4
    cursor = re.search(r'rel="next"; results="true"; cursor="(\d+)"', page.headers["Link"])
    assert cursor is not None
    rest = await (
        await client.get(
            f"{HOOKS}{hook_id}/deliveries/?per_page=4&cursor={cursor.group(1)}",
            headers=owner["headers"],
        )
    ).json()
    assert [r["event"] for r in rest] == ["member.edit", "webhook.create"]


async def test_creating_a_webhook_needs_a_recent_reauthentication(client, pool, owner) -> None:
    from tests.security.helpers import age_reauthentication

    other = await create_user(pool, "second@acme.test")
    await add_member(pool, owner["org"]["id"], other, role="owner")
    assert (await sign_in(client, "second@acme.test")).status == 200
    # Signed in with a password only long ago: no sudo. (A session cookie, not a token.)
    await age_reauthentication(pool)
    answer = await client.post(HOOKS, json={"url": "https://hooks.example.com/"})
    assert answer.status == 401
    assert (await answer.json())["code"] == "sudo-required"
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from webhooks") == 0
    confirmed = await client.post("/api/0/auth/sudo/", json={"password": PASSWORD})
    assert confirmed.status == 200
    answer = await client.post(HOOKS, json={"url": "https://hooks.example.com/"})
    assert answer.status == 201, await answer.text()


# --- Outside development --------------------------------------------------------------------


@pytest.fixture
async def production_client(aiohttp_client, settings, pool):
    app = create_app(settings.replace(environment="production", secret_key="p" * 40))
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/",
        "https://127.0.0.1/",
        "https://10.0.0.8/hook",
        "https://192.168.1.1/",
        "https://172.16.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://100.64.0.1/",
        "https://224.0.0.1/",
        "https://0.0.0.0/",
        "https://[::1]/",
        "https://[fe80::1]/",
        "https://[fc00::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://localhost/",
        "https://localhost.:8443/",
        "https://no-such-host.invalid/",
    ],
)
async def test_private_or_plain_http_urls_are_refused_outside_development(
    production_client, pool, owner, url
) -> None:
    answer = await production_client.post(HOOKS, json={"url": url}, headers=owner["headers"])
    assert answer.status == 400, url
    assert "url" in (await answer.json())["errors"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from webhooks") == 0


async def test_a_public_https_address_is_accepted_outside_development(
    production_client, owner
) -> None:
    answer = await production_client.post(
        HOOKS, json={"url": "https://93.184.215.14/hook"}, headers=owner["headers"]
    )
    assert answer.status == 201, await answer.text()


# --- The webhooks page ------------------------------------------------------------------------


async def test_the_webhooks_page_adds_lists_and_deletes_webhooks(
    client, pool, owner, settings
) -> None:
    # The factory's TOTP factor has no usable secret: a second owner without 2FA signs in.
    other = await create_user(pool, "second@acme.test")
    await add_member(pool, owner["org"]["id"], other, role="owner")
    assert (await sign_in(client, "second@acme.test")).status == 200

    page = await (await client.get(PAGE)).text()
    assert 'id="webhooks"' in page and "No webhooks yet." in page
    assert "<script" not in page and not re.search(r"\son[a-z]+=", page)

    added = await client.post(
        PAGE,
        data={"url": "https://hooks.example.com/a", "scope": "some", "events": ["member.pending"]},
    )
    text = await added.text()
    assert added.status == 201
    secret = re.search(r"<code>(whsec_[A-Za-z0-9+/]{43}=)</code>", text)
    assert secret is not None
    async with pool.acquire() as conn:
        row = await conn.fetchrow("select * from webhooks")
    assert list(row["events"]) == ["member.pending"]
    assert webhooks.decrypt_secret(row["secret_encrypted"], settings.secret_key) == secret.group(1)

    page = await (await client.get(PAGE)).text()
    assert "https://hooks.example.com/a" in page and secret.group(1) not in page

    refused = await client.post(PAGE, data={"url": "ftp://x/", "scope": "all"})
    assert refused.status == 400 and "https://" in await refused.text()

    deleted = await client.post(f"{PAGE}{row['id']}/delete/", allow_redirects=False)
    assert deleted.status == 303
    page = await (await client.get(PAGE)).text()
    assert "No webhooks yet." in page


async def test_the_webhooks_section_is_for_owners(client, pool, owner) -> None:
    manager = await create_user(pool, "manager@acme.test")
    await add_member(pool, owner["org"]["id"], manager, role="manager")
    assert (await sign_in(client, "manager@acme.test")).status == 200
    assert (await client.get(PAGE)).status == 403
    page = await (await client.get(SETTINGS)).text()
    assert "/organizations/acme/webhooks/" not in page
    refused = await client.post(PAGE, data={"url": "https://hooks.example.com/", "scope": "all"})
    assert refused.status == 403
