"""Rejoining through the link: accept, join after enrolling, resend, and links after the purge."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from urllib.parse import urlsplit

import dramatiq
import pyotp
import pytest

from db import maintenance
from require2fa.invitations import REINVITE_LIMIT
from tests.factories import (
    add_member,
    add_totp,
    create_user,
    link_in,
    owner_and_org,
    remove_for_2fa,
    settle_enforcement,
    sign_in,
    token_for,
)


def api_path(accept_url: str) -> str:
    """The API twin of an email's `/accept/{member_id}/{token}/` page link."""
    path = urlsplit(accept_url).path
    assert path.startswith("/accept/")
    return "/api/0/accept-invite/" + path.removeprefix("/accept/")


async def newest_link(pool, member_id: int) -> str:
    async with pool.acquire() as conn:
        sealed = await conn.fetchval(
            """select context->>'accept_url_sealed' from email_outbox
               where member_id = $1 order by id desc limit 1""",
            member_id,
        )
    return link_in(sealed)


async def audit_events(pool, member_id: int) -> list[tuple[str, dict]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "select event, data from audit_log where target_member_id = $1 order by id",
            member_id,
        )
    return [(row["event"], row["data"]) for row in rows]


async def seed_org(pool, *, settings_of_alice: dict | None = None):
    """An organization requiring 2FA whose owner has it, and Alice (admin, backend team,
    notification settings) who has not."""
    owner, org = await owner_and_org(
        pool, "acme", "owner@example.com", has2fa=True, teams=("backend", "frontend")
    )
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa = true where id = $1", org["id"])
    alice = await create_user(pool, "alice@example.com")
    member_id = await add_member(
        pool,
        org["id"],
        alice,
        role="admin",
        teams=("backend",),
        settings=settings_of_alice or {"workflow": "always", "deploy": "committed"},
    )
    return owner, org, alice, member_id


async def enroll_totp(client, headers: dict[str, str] | None = None) -> dict:
    """Sets up an authenticator app through the API, as a person with the app would."""
    url = "/api/0/users/me/authenticators/totp/enroll/"
    started = await client.post(url, json={}, headers=headers)
    assert started.status == 200
    secret = (await started.json())["secret"]
    confirmed = await client.post(
        url, json={"secret": secret, "otp": pyotp.TOTP(secret).now()}, headers=headers
    )
    assert confirmed.status == 201
    return await confirmed.json()


async def member_as_owner_sees_it(client, pool, owner_id: int, member_id: int) -> dict:
    response = await client.get(
        f"/api/0/organizations/acme/members/{member_id}/", headers=await token_for(pool, owner_id)
    )
    assert response.status == 200
    return await response.json()


async def test_the_journey_back_in(client, pool, settings) -> None:
    """The seed's steps: the email, its button, setting up 2FA, and back in with everything."""
    owner, _, alice, member_id = await seed_org(pool)
    before = await member_as_owner_sees_it(client, pool, owner["id"], member_id)

    # Removed for having no 2FA: the email carries the link.
    accept_url = await remove_for_2fa(pool, member_id, settings)
    assert await newest_link(pool, member_id) == accept_url
    link = api_path(accept_url)
    assert (await client.get("/api/0/organizations/acme/")).status == 401  # nobody signed in

    # Following it without being signed in: it says what is missing.
    anonymous = await client.get(link)
    assert anonymous.status == 200
    body = await anonymous.json()
    assert body["needsAuthentication"] is True and body["orgSlug"] == "acme"
    reinstate_by = body["reinstateBy"]
    assert reinstate_by

    assert (await sign_in(client, "alice@example.com")).status == 200
    assert (await client.get("/api/0/organizations/acme/")).status == 404  # no longer a member
    looked = await (await client.get(link)).json()
    assert looked["needsAuthentication"] is False
    assert looked["needs2fa"] is True
    assert looked["existingMember"] is False
    assert looked["reinstateBy"] == reinstate_by

    refused = await client.post(link)
    assert refused.status == 403
    assert (await refused.json())["code"] == "2fa-required"

    # Setting up 2FA leads back to the link (it travelled in the session): an explicit step.
    enrolled = await enroll_totp(client)
    assert len(enrolled["recoveryCodes"]) == 10
    assert enrolled["joinStep"] == {
        "orgSlug": "acme",
        "orgName": "Acme",
        "email": "alice@example.com",
        "memberId": str(member_id),
        "pendingReason": "2fa",
        "acceptPath": link.replace("/api/0/accept-invite/", "/accept/"),
    }
    assert (await client.get("/api/0/organizations/acme/")).status == 404  # not yet
    joined = await client.post(link)
    assert joined.status == 200
    assert await joined.json() == {
        "orgSlug": "acme",
        "memberId": str(member_id),
        "redirect": "/organizations/acme/",
    }
    assert (await client.get("/api/0/organizations/acme/")).status == 200

    after = await member_as_owner_sees_it(client, pool, owner["id"], member_id)
    assert after["pending"] is False and after["user"]["id"] == str(alice["id"])
    assert after["user"]["has2fa"] is True
    for kept in ("id", "role", "teams", "settings", "email"):
        assert after[kept] == before[kept]
    assert after["role"] == "admin" and after["teams"] == ["backend"]
    assert after["settings"] == {"workflow": "always", "deploy": "committed"}

    events = await audit_events(pool, member_id)
    assert [event for event, _ in events] == ["member.pending", "member.accept"]
    assert events[1][1]["email"] == "alice@example.com" and events[1][1]["role"] == "admin"

    # The link was single use.
    again = await client.post(link)
    assert again.status == 400
    assert (await again.json())["detail"] == "Invalid invite code"


@pytest.fixture
def enforcement_worker(start_worker) -> dramatiq.Worker:
    """Real Dramatiq worker threads on the `enforcement` queue."""
    return start_worker("enforcement")


@pytest.mark.e2e
async def test_the_journey_from_the_switch(client, pool, settings, enforcement_worker) -> None:
    """The owner turns the requirement on through the API; the enforcement workers remove Alice;
    her email's link, 2FA set up through the API, and she is back with everything."""
    from jobs.broker import broker

    owner, org = await owner_and_org(
        pool, "acme", "owner@example.com", has2fa=True, teams=("backend", "frontend")
    )
    alice = await create_user(pool, "alice@example.com")
    member_id = await add_member(
        pool,
        org["id"],
        alice,
        role="manager",
        teams=("backend", "frontend"),
        settings={"workflow": "never"},
    )
    before = await member_as_owner_sees_it(client, pool, owner["id"], member_id)
    headers = await token_for(pool, owner["id"])
    turned_on = await client.put(
        "/api/0/organizations/acme/", json={"require2FA": True}, headers=headers
    )
    assert turned_on.status == 200
    await settle_enforcement(pool, broker, timeout=60)

    removed = await member_as_owner_sees_it(client, pool, owner["id"], member_id)
    assert removed["pending"] is True and removed["pendingReason"] == "2fa"
    async with pool.acquire() as conn:
        email = await conn.fetchrow(
            "select * from email_outbox where member_id = $1 and template = 'removed_for_2fa'",
            member_id,
        )
    assert email["to_address"] == "alice@example.com"
    link = api_path(link_in(email["context"]))

    await sign_in(client, "alice@example.com")
    looked = await (await client.get(link)).json()
    assert looked["needs2fa"] is True
    assert looked["reinstateBy"] == removed["reinstateBy"] == email["context"]["reinstate_by"]
    enrolled = await enroll_totp(client)
    assert enrolled["joinStep"]["orgSlug"] == "acme"
    assert (await client.post(link)).status == 200
    assert (await client.get("/api/0/organizations/acme/")).status == 200

    after = await member_as_owner_sees_it(client, pool, owner["id"], member_id)
    for kept in ("id", "role", "teams", "settings"):
        assert after[kept] == before[kept]
    log = await client.get(
        "/api/0/organizations/acme/audit-logs/?event=member.accept", headers=headers
    )
    assert log.status == 200
    [entry] = (await log.json())["rows"]
    assert entry["targetMember"] is not None and entry["data"]["email"] == "alice@example.com"


async def test_accept_with_an_api_token(client, pool, settings) -> None:
    """A program with the user's API token: look, set up 2FA, then accept explicitly."""
    owner, _, alice, member_id = await seed_org(pool)
    before = await member_as_owner_sees_it(client, pool, owner["id"], member_id)
    link = api_path(await remove_for_2fa(pool, member_id, settings))
    headers = await token_for(pool, alice["id"])

    looked = await (await client.get(link, headers=headers)).json()
    assert looked["needsAuthentication"] is False and looked["needs2fa"] is True
    assert (await client.post(link, headers=headers)).status == 403

    enrolled = await enroll_totp(client, headers)
    assert "joinStep" not in enrolled  # nothing remembered: a token is not a browser session
    assert (await (await client.get(link, headers=headers)).json())["needs2fa"] is False

    accepted = await client.post(link, headers=headers)
    assert accepted.status == 200
    assert await accepted.json() == {
        "orgSlug": "acme",
        "memberId": str(member_id),
        "redirect": "/organizations/acme/",
    }
    after = await member_as_owner_sees_it(client, pool, owner["id"], member_id)
    assert after["user"]["id"] == str(alice["id"])
    for kept in ("role", "teams", "settings"):
        assert after[kept] == before[kept]
    assert [e for e, _ in await audit_events(pool, member_id)][-1] == "member.accept"
    assert (await client.post(link, headers=headers)).status == 400


async def test_bad_links(client, pool, settings) -> None:
    _, _, _, member_id = await seed_org(pool)
    link = api_path(await remove_for_2fa(pool, member_id, settings))
    base = link.rsplit("/", 2)[0]
    for bad in (
        f"{base}/not-the-token/",
        f"/api/0/accept-invite/{member_id + 1000}/whatever/",
        "/api/0/accept-invite/0/whatever/",
        "/api/0/accept-invite/abc/whatever/",
        "/api/0/accept-invite/99999999999999999999999/whatever/",
    ):
        response = await client.get(bad)
        assert response.status == 400, bad
        assert (await response.json())["detail"] == "Invalid invite code"
    await create_user(pool, "bob@example.com")
    await sign_in(client, "bob@example.com")
    assert (await client.post(f"{base}/not-the-token/")).status == 400


async def test_accept_needs_sign_in(client, pool, settings) -> None:
    _, _, _, member_id = await seed_org(pool)
    link = api_path(await remove_for_2fa(pool, member_id, settings))
    response = await client.post(link)
    assert response.status == 401
    assert "detail" in await response.json()


async def test_removed_rejoined_and_removed_again_only_the_newest_link(
    client, pool, settings
) -> None:
    _, _, alice, member_id = await seed_org(pool)
    first = api_path(await remove_for_2fa(pool, member_id, settings))
    await sign_in(client, "alice@example.com")
    async with pool.acquire() as conn:
        await add_totp(conn, alice["id"])
    assert (await client.post(first)).status == 200
    async with pool.acquire() as conn:
        await conn.execute("delete from authenticators where user_id = $1", alice["id"])
    second = api_path(await remove_for_2fa(pool, member_id, settings))
    async with pool.acquire() as conn:
        await add_totp(conn, alice["id"])
    assert (await client.get(first)).status == 400
    assert (await client.post(first)).status == 400
    assert (await client.post(second)).status == 200


async def test_enrolling_without_a_link_joins_nothing(client, pool, settings) -> None:
    _, _, _, member_id = await seed_org(pool)
    await remove_for_2fa(pool, member_id, settings)
    await sign_in(client, "alice@example.com")
    assert "joinStep" not in await enroll_totp(client)
    assert (await client.get("/api/0/organizations/acme/")).status == 404


async def test_join_after_enrolling_forgets_a_replaced_link(client, pool, settings) -> None:
    owner, _, _, member_id = await seed_org(pool)
    old_link = api_path(await remove_for_2fa(pool, member_id, settings))
    await sign_in(client, "alice@example.com")
    assert (await client.get(old_link)).status == 200
    resent = await client.put(
        f"/api/0/organizations/acme/members/{member_id}/",
        json={"reinvite": True},
        headers=await token_for(pool, owner["id"]),
    )
    assert resent.status == 200
    assert "joinStep" not in await enroll_totp(client)
    async with pool.acquire() as conn:
        assert await conn.fetchval("select user_id from members where id = $1", member_id) is None
    # The new link still works, by hand.
    assert (await client.post(api_path(await newest_link(pool, member_id)))).status == 200


async def test_join_after_enrolling_joins_nothing_once_expired(client, pool, settings) -> None:
    _, _, _, member_id = await seed_org(pool)
    link = api_path(await remove_for_2fa(pool, member_id, settings))
    await sign_in(client, "alice@example.com")
    assert (await client.get(link)).status == 200
    async with pool.acquire() as conn:
        await conn.execute(
            "update members set reinstate_by = now() - interval '1 second' where id = $1",
            member_id,
        )
    assert "joinStep" not in await enroll_totp(client)
    assert (await client.get(link)).status == 410


async def test_resend(client, pool, settings) -> None:
    owner, _, alice, member_id = await seed_org(pool)
    old_link = api_path(await remove_for_2fa(pool, member_id, settings))
    reinstate_by = (await (await client.get(old_link)).json())["reinstateBy"]
    headers = await token_for(pool, owner["id"])

    resent = await client.put(
        f"/api/0/organizations/acme/members/{member_id}/", json={"reinvite": True}, headers=headers
    )
    assert resent.status == 200
    member = await resent.json()
    assert member["pending"] is True and member["reinstateBy"] == reinstate_by

    async with pool.acquire() as conn:
        email = await conn.fetchrow(
            "select * from email_outbox where member_id = $1 order by id desc limit 1", member_id
        )
    assert email["template"] == "removed_for_2fa" and email["to_address"] == "alice@example.com"
    assert email["context"]["reinstate_by"] == reinstate_by
    assert email["context"]["member_email"] == "alice@example.com"
    new_link = api_path(link_in(email["context"]))
    assert new_link != old_link

    old = await client.get(old_link)
    assert old.status == 400 and (await old.json())["detail"] == "Invalid invite code"
    fresh = await client.get(new_link)
    assert fresh.status == 200 and (await fresh.json())["reinstateBy"] == reinstate_by
    assert [e for e, _ in await audit_events(pool, member_id)] == [
        "member.pending",
        "member.reinvite",
    ]

    # The new link restores the member just as the first would have.
    await sign_in(client, "alice@example.com")
    async with pool.acquire() as conn:
        await add_totp(conn, alice["id"])
    assert (await client.post(old_link)).status == 400
    assert (await client.post(new_link)).status == 200


async def test_resend_is_rate_limited_per_member(client, pool, settings) -> None:
    owner, org, _, member_id = await seed_org(pool)
    await remove_for_2fa(pool, member_id, settings)
    bob = await create_user(pool, "bob@example.com")
    bob_member = await add_member(pool, org["id"], bob)
    await remove_for_2fa(pool, bob_member, settings)
    headers = await token_for(pool, owner["id"])
    url = f"/api/0/organizations/acme/members/{member_id}/"
    for _ in range(REINVITE_LIMIT.limit):
        assert (await client.put(url, json={"reinvite": True}, headers=headers)).status == 200
    limited = await client.put(url, json={"reinvite": True}, headers=headers)
    assert limited.status == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert "detail" in await limited.json()
    # Another member is not held back.
    other = await client.put(
        f"/api/0/organizations/acme/members/{bob_member}/", json={"reinvite": True}, headers=headers
    )
    assert other.status == 200


async def test_resend_permissions_and_states(client, pool, settings) -> None:
    owner, org, alice, member_id = await seed_org(pool)
    admin = await create_user(pool, "admin@example.com", has2fa=True)
    await add_member(pool, org["id"], admin, role="admin")
    carol = await create_user(pool, "carol@example.com", has2fa=True)
    carol_member = await add_member(pool, org["id"], carol)
    await remove_for_2fa(pool, member_id, settings)

    url = f"/api/0/organizations/acme/members/{member_id}/"
    as_admin = await client.put(
        url, json={"reinvite": True}, headers=await token_for(pool, admin["id"])
    )
    assert as_admin.status == 403
    owner_headers = await token_for(pool, owner["id"])
    active = await client.put(
        f"/api/0/organizations/acme/members/{carol_member}/",
        json={"reinvite": True},
        headers=owner_headers,
    )
    assert active.status == 409
    missing = await client.put(
        "/api/0/organizations/acme/members/987654/", json={"reinvite": True}, headers=owner_headers
    )
    assert missing.status == 404
    async with pool.acquire() as conn:
        await conn.execute(
            "update members set reinstate_by = now() - interval '1 second' where id = $1",
            member_id,
        )
    expired = await client.put(url, json={"reinvite": True}, headers=owner_headers)
    assert expired.status == 410


async def test_purged_link_says_expired(client, pool, settings) -> None:
    short = settings.replace(reinstatement_window=timedelta(seconds=2))
    _, _, alice, member_id = await seed_org(pool)
    link = api_path(await remove_for_2fa(pool, member_id, short))
    looked = await client.get(link)
    assert looked.status == 200
    async with pool.acquire() as conn:
        # Wait out the window on the database's clock (the one the link is checked against).
        left = await conn.fetchval(
            "select extract(epoch from reinstate_by - now())::float from members where id = $1",
            member_id,
        )
    await asyncio.sleep(max(left, 0) + 0.1)

    # Past the window: expired, before and after the purge.
    before = await client.get(link)
    assert before.status == 410
    assert (await before.json())["detail"] == "This invitation has expired"
    await sign_in(client, "alice@example.com")
    async with pool.acquire() as conn:
        await add_totp(conn, alice["id"])
    assert (await client.post(link)).status == 410

    async with pool.acquire() as conn:
        result = await maintenance.purge_expired(conn)
        assert result.purged == 1
        assert await conn.fetchval("select count(*) from members where id = $1", member_id) == 0
        assert (
            await conn.fetchval("select count(*) from member_teams where member_id = $1", member_id)
            == 0
        )
    after = await client.get(link)
    assert after.status == 410
    assert (await after.json())["detail"] == "This invitation has expired"
    assert (await client.post(link)).status == 410
    tampered = await client.get(link.rsplit("/", 2)[0] + "/tampered/")
    assert tampered.status == 400

    events = await audit_events(pool, member_id)
    assert [event for event, _ in events] == ["member.pending", "member.remove"]
    assert events[1][1]["reason"] == "2fa-window-expired"


async def invite_link(client, pool, owner_id: int, org_slug: str, email: str) -> tuple[int, str]:
    """An invitation sent through the API by the organization's owner: (member id, API link)."""
    invited = await client.post(
        f"/api/0/organizations/{org_slug}/members/",
        json={"email": email, "role": "member"},
        headers=await token_for(pool, owner_id),
    )
    assert invited.status == 201, await invited.text()
    member_id = int((await invited.json())["id"])
    return member_id, api_path(await newest_link(pool, member_id))


async def memberships(pool, user_id: int) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """select o.slug from members m join organizations o on o.id = m.organization_id
               where m.user_id = $1 order by o.slug""",
            user_id,
        )
    return [row["slug"] for row in rows]


async def test_opening_someone_elses_link_then_enrolling_joins_nothing(client, pool) -> None:
    """A victim opens the link an attacker sent themselves, later sets up 2FA: the link is
    refused to their account (it was sent to another address), no "Join {org}" step is offered,
    and pressing Join anyway joins nothing."""
    attacker, _ = await owner_and_org(pool, "evil", "mallory@example.com", has2fa=True)
    member_id, link = await invite_link(client, pool, attacker["id"], "evil", "mal2@example.com")
    victim = await create_user(pool, "victim@example.com")

    await sign_in(client, "victim@example.com")
    looked = await client.get(link)
    assert looked.status == 403
    detail = (await looked.json())["detail"]
    assert "sent to mal2@example.com" in detail and "signed in as victim@example.com" in detail
    page = await client.get(link.replace("/api/0/accept-invite/", "/accept/"))
    assert page.status == 403
    assert "mal2@example.com" in await page.text()

    enrolled = await enroll_totp(client)
    assert enrolled.get("joinStep") is None
    assert await memberships(pool, victim["id"]) == []
    assert (await client.get("/api/0/organizations/evil/")).status == 404
    assert [event for event, _ in await audit_events(pool, member_id)] == ["member.invite"]

    joined = await client.post(link)
    assert joined.status == 403
    assert await memberships(pool, victim["id"]) == []
    assert [event for event, _ in await audit_events(pool, member_id)] == ["member.invite"]


async def test_the_security_page_offers_the_join_step_and_joins_nothing(client, pool) -> None:
    owner, _ = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    _, link = await invite_link(client, pool, owner["id"], "acme", "carol@example.com")
    page_link = link.replace("/api/0/accept-invite/", "/accept/")
    carol = await create_user(pool, "carol@example.com")
    await sign_in(client, "carol@example.com")
    assert (await client.get(page_link)).status == 200

    started = await client.post("/api/0/users/me/authenticators/totp/enroll/", json={})
    secret = (await started.json())["secret"]
    confirmed = await client.post(
        "/account/security/totp/", data={"secret": secret, "otp": pyotp.TOTP(secret).now()}
    )
    text = await confirmed.text()
    assert confirmed.status == 201, text
    assert "carol@example.com" in text and f'href="{page_link}"' in text
    assert await memberships(pool, carol["id"]) == []

    button = await (await client.get(page_link)).text()
    assert "Join Acme</button>" in button and "carol@example.com" in button
    pressed = await client.post(page_link, allow_redirects=False)
    assert pressed.status == 303 and pressed.headers["Location"] == "/organizations/acme/"
    assert await memberships(pool, carol["id"]) == ["acme"]


async def test_a_rejoin_link_works_only_for_the_account_it_was_removed_from(
    client, pool, settings
) -> None:
    owner, _, alice, member_id = await seed_org(pool)
    before = await member_as_owner_sees_it(client, pool, owner["id"], member_id)
    link = api_path(await remove_for_2fa(pool, member_id, settings))
    page_link = link.replace("/api/0/accept-invite/", "/accept/")
    bob = await create_user(pool, "bob@example.com")
    await sign_in(client, "bob@example.com")
    await enroll_totp(client)

    # Bob (signed in, with 2FA) is refused, by the API and the page; nothing changes.
    for headers in (await token_for(pool, bob["id"]), None):
        for method in (client.get, client.post):
            refused = await method(link, headers=headers)
            assert refused.status == 403, await refused.text()
            assert "only the account it was removed from" in (await refused.json())["detail"]
    page = await client.get(page_link)
    assert page.status == 403 and "only the account it was removed from" in await page.text()
    pressed = await client.post(page_link, allow_redirects=False)
    assert pressed.status == 403
    assert await memberships(pool, bob["id"]) == []
    async with pool.acquire() as conn:
        row = await conn.fetchrow("select * from members where id = $1", member_id)
    assert row["user_id"] is None and row["pending_reason"] == "2fa"
    assert [event for event, _ in await audit_events(pool, member_id)] == ["member.pending"]

    # Alice still gets everything back through the same link.
    await client.post("/api/0/auth/logout/", json={})
    await sign_in(client, "alice@example.com")
    await enroll_totp(client)
    assert (await client.post(link)).status == 200
    after = await member_as_owner_sees_it(client, pool, owner["id"], member_id)
    assert after["user"]["id"] == str(alice["id"])
    for kept in ("role", "teams", "settings"):
        assert after[kept] == before[kept]


async def test_another_account_enrolling_after_opening_a_rejoin_link_joins_nothing(
    client, pool, settings
) -> None:
    _, _, alice, member_id = await seed_org(pool)
    link = api_path(await remove_for_2fa(pool, member_id, settings))
    assert (await client.get(link)).status == 200  # remembered while nobody is signed in
    bob = await create_user(pool, "bob@example.com")
    await sign_in(client, "bob@example.com")
    assert "joinStep" not in await enroll_totp(client)
    assert await memberships(pool, bob["id"]) == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("select user_id from members where id = $1", member_id) is None
