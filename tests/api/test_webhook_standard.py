"""Webhooks, second form (Standard Webhooks 1.0), and the webhook operations of the third round:
real deliveries to a real receiver, verified by the `standardwebhooks` package as a receiver
would; rotation with both secrets signing for 24 hours; ping, redeliver, change, the cap."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from db import audit
from db.audit import Actor
from jobs import webhooks as webhook_jobs
from require2fa import errors, webhooks
from tests.factories import create_org, create_user, token_for
from tests.webhook_receiver import Receiver

HOOKS = "/api/0/organizations/acme/webhooks/"


@pytest.fixture
async def owner(pool):
    user = await create_user(pool, "owner@acme.test", has2fa=True)
    org = await create_org(pool, "acme", user["id"])
    return {"user": user, "org": org, "headers": await token_for(pool, user["id"])}


@pytest.fixture
async def receiver():
    found = Receiver()
    await found.start()
    yield found
    await found.stop()


async def _create(client, owner, url: str, events: list[str] | None = None) -> dict:
    answer = await client.post(
        HOOKS, json={"url": url, "events": events or ["member.edit"]}, headers=owner["headers"]
    )
    assert answer.status == 201, await answer.text()
    return await answer.json()


async def _event(pool, owner, n: int = 0) -> None:
    async with pool.acquire() as conn:
        await audit.record(
            conn,
            organization_id=owner["org"]["id"],
            event="member.edit",
            actor=Actor(label="tests"),
            data={"n": n},
        )


def _verify(secret: str | bytes, request) -> dict:
    """What a Standard Webhooks receiver does, with the library as it is."""
    return Webhook(secret).verify(request.body, request.headers)


def _first_form(request, secret: str) -> bool:
    """What a receiver of the first form does: the HMAC-SHA256 of the raw body under the
    secret it was given."""
    mac = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers["X-Require2FA-Signature"], f"sha256={mac}")


async def test_each_delivery_verifies_with_standard_webhooks_and_the_first_form(
    client, pool, owner, settings, receiver
) -> None:
    hook = await _create(client, owner, receiver.url)
    await _event(pool, owner, 1)
    await _event(pool, owner, 2)

    await webhook_jobs.dispatch(pool, settings)

    assert len(receiver.requests) == 2
    for request in receiver.requests:
        body = _verify(hook["secret"], request)
        assert body["event"] == "member.edit"
        assert request.headers["webhook-id"] == request.headers["X-Require2FA-Delivery"]
        assert request.headers["webhook-signature"].startswith("v1,")
        assert " " not in request.headers["webhook-signature"]  # one secret signs
        assert _first_form(request, hook["secret"])
        with pytest.raises(WebhookVerificationError):
            _verify(webhooks.new_secret(), request)
        tampered = request.body.replace(b'"n":', b'"m":')
        with pytest.raises(WebhookVerificationError):
            Webhook(hook["secret"]).verify(tampered, request.headers)


async def test_a_secret_of_the_first_form_keeps_working(pool, owner, settings, receiver) -> None:
    old = "whsec_" + secrets.token_urlsafe(32)  # what webhooks were given before
    async with pool.acquire() as conn:
        await conn.execute(
            """insert into webhooks (organization_id, url, events, secret_encrypted)
               values ($1, $2, '{member.edit}', $3)""",
            owner["org"]["id"],
            receiver.url,
            webhooks.encrypt_secret(old, settings.secret_key),
        )
    await _event(pool, owner)

    await webhook_jobs.dispatch(pool, settings)

    (request,) = receiver.requests
    assert _first_form(request, old)
    key = base64.urlsafe_b64decode(old[6:] + "=")  # its key bytes, given to the library
    assert _verify(key, request)["event"] == "member.edit"


async def test_rotation_signs_with_both_secrets_for_24_hours(
    client, pool, owner, settings, receiver
) -> None:
    hook = await _create(client, owner, receiver.url)
    rotated = await client.post(f"{HOOKS}{hook['id']}/rotate-secret/", headers=owner["headers"])
    assert rotated.status == 200, await rotated.text()
    new = (await rotated.json())["secret"]
    assert new != hook["secret"] and new.startswith("whsec_")
    await _event(pool, owner, 1)

    await webhook_jobs.dispatch(pool, settings)

    (during,) = receiver.requests
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert _verify(hook["secret"], during)["data"] == {"n": 1}
    assert _verify(new, during)["data"] == {"n": 1}
    assert _first_form(during, new)

    async with pool.acquire() as conn:  # the 24 hours pass
        await conn.execute("update webhooks set previous_secret_until = now() - interval '1 s'")
    await _event(pool, owner, 2)
    await webhook_jobs.dispatch(pool, settings)

    after = receiver.requests[1]
    assert _verify(new, after)["data"] == {"n": 2}
    with pytest.raises(WebhookVerificationError):
        _verify(hook["secret"], after)
    log = await client.get(
        "/api/0/organizations/acme/audit-logs/?event=webhook.rotate-secret",
        headers=owner["headers"],
    )
    assert len((await log.json())["rows"]) == 1


async def test_ping_is_delivered_signed(client, pool, owner, settings, receiver) -> None:
    hook = await _create(client, owner, receiver.url)
    answer = await client.post(f"{HOOKS}{hook['id']}/ping/", headers=owner["headers"])
    assert answer.status == 202, await answer.text()
    ping_id = (await answer.json())["id"]

    await webhook_jobs.dispatch(pool, settings)

    (request,) = receiver.requests
    body = _verify(hook["secret"], request)
    assert body["event"] == "ping" and request.headers["X-Require2FA-Event"] == "ping"
    assert body["data"] == {"webhook": hook["id"]} and body["organization"]["slug"] == "acme"
    assert request.headers["webhook-id"] == ping_id
    listed = await (
        await client.get(f"{HOOKS}{hook['id']}/deliveries/", headers=owner["headers"])
    ).json()
    assert [(d["id"], d["event"], d["auditLogId"], d["status"]) for d in listed] == [
        (ping_id, "ping", None, "delivered")
    ]


async def test_redeliver_sends_the_same_delivery_again(
    client, pool, owner, settings, receiver
) -> None:
    hook = await _create(client, owner, receiver.url)
    await _event(pool, owner)
    await webhook_jobs.dispatch(pool, settings)
    (first,) = receiver.requests
    delivery_id = first.headers["webhook-id"]

    path = f"{HOOKS}{hook['id']}/deliveries/{delivery_id}/redeliver/"
    answer = await client.post(path, headers=owner["headers"])
    assert answer.status == 202, await answer.text()
    await webhook_jobs.dispatch(pool, settings)

    again = receiver.requests[1]
    assert again.headers["webhook-id"] == delivery_id and again.body == first.body
    assert _verify(hook["secret"], again)["data"] == {"n": 0}
    listed = await (
        await client.get(f"{HOOKS}{hook['id']}/deliveries/", headers=owner["headers"])
    ).json()
    assert [(d["status"], d["attempts"]) for d in listed] == [("delivered", 2)]
    missing = await client.post(
        f"{HOOKS}{hook['id']}/deliveries/999999/redeliver/", headers=owner["headers"]
    )
    assert missing.status == 404


async def test_put_changes_events_turns_off_and_on(client, pool, owner, settings, receiver) -> None:
    hook = await _create(client, owner, receiver.url)
    path = f"{HOOKS}{hook['id']}/"
    off = await client.put(path, json={"active": False}, headers=owner["headers"])
    assert off.status == 200, await off.text()
    assert (await off.json())["active"] is False
    await _event(pool, owner)
    await webhook_jobs.dispatch(pool, settings)
    assert receiver.requests == []
    refused = await client.post(f"{path}ping/", headers=owner["headers"])
    assert refused.status == 409

    on = await client.put(
        path, json={"active": True, "events": ["member.invite"]}, headers=owner["headers"]
    )
    assert (await on.json())["active"] is True
    assert (await on.json())["events"] == ["member.invite"]
    async with pool.acquire() as conn:
        await audit.record(
            conn, organization_id=owner["org"]["id"], event="member.invite", actor=Actor()
        )
    await webhook_jobs.dispatch(pool, settings)
    assert [r.headers["X-Require2FA-Event"] for r in receiver.requests] == ["member.invite"]
    same = await client.put(path, json={"events": ["member.invite"]}, headers=owner["headers"])
    assert same.status == 200
    log = await client.get(
        "/api/0/organizations/acme/audit-logs/?event=webhook.edit", headers=owner["headers"]
    )
    edits = [row["data"] for row in (await log.json())["rows"]]
    assert edits == [
        {"id": hook["id"], "active": True, "events": ["member.invite"]},
        {"id": hook["id"], "active": False},
    ]
    bad = await client.put(path, json={"events": ["no.such"]}, headers=owner["headers"])
    assert bad.status == 400


async def test_at_most_twenty_webhooks_per_organization(client, pool, owner, settings) -> None:
    for n in range(webhooks.MAX_WEBHOOKS):
        await _create(client, owner, f"https://hooks.example.com/{n}")
    answer = await client.post(
        HOOKS, json={"url": "https://hooks.example.com/21"}, headers=owner["headers"]
    )
    assert answer.status == 409
    assert "at most 20 webhooks" in (await answer.json())["detail"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from webhooks") == 20


async def test_two_creations_at_once_cannot_both_pass_the_cap(pool, owner, settings) -> None:
    async def create(n: int) -> object:
        try:
            return await webhooks.subscribe(
                pool,
                settings,
                organization_id=owner["org"]["id"],
                url=f"https://hooks.example.com/{n}",
                events=["*"],
                actor=Actor(label="tests"),
            )
        except errors.Conflict as refused:
            return refused

    for n in range(webhooks.MAX_WEBHOOKS - 1):
        await create(n)
    outcomes = await asyncio.gather(*(create(100 + n) for n in range(4)))
    assert sum(isinstance(o, webhooks.Created) for o in outcomes) == 1
    assert sum(isinstance(o, errors.Conflict) for o in outcomes) == 3
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from webhooks") == webhooks.MAX_WEBHOOKS


async def test_the_webhooks_page_shows_a_webhook_turned_off(client, pool, owner) -> None:
    from tests.factories import add_member, sign_in

    hook = await _create(client, owner, "https://hooks.example.com/off")
    await _create(client, owner, "https://hooks.example.com/on")
    await client.put(f"{HOOKS}{hook['id']}/", json={"active": False}, headers=owner["headers"])
    # The factory's TOTP factor has no usable secret: a second owner without 2FA signs in.
    other = await create_user(pool, "second@acme.test")
    await add_member(pool, owner["org"]["id"], other, role="owner")
    assert (await sign_in(client, "second@acme.test")).status == 200
    page = await (await client.get("/organizations/acme/webhooks/")).text()
    rows = {url: page.split(url, 1)[1].split("</section>", 1)[0] for url in ("/off", "/on")}
    assert "inactive: nothing is sent" in rows["/off"]
    assert "Active" in rows["/on"] and "inactive" not in rows["/on"]
