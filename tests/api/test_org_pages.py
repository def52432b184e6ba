"""An organization's admin pages: the require-2FA switch with its confirm step and the run's
progress, the members list (2FA column, pending badge, Resend) and the audit log."""

from __future__ import annotations

import re

from db import audit
from require2fa.organization_settings import NEEDS_PERSONAL_2FA, NOT_WITH_SSO, OWNERS_ONLY
from tests.factories import (
    add_member,
    create_user,
    enroll_totp,
    owner_and_org,
    remove_for_2fa,
    sign_in,
)

SETTINGS = "/organizations/acme/settings/"
MEMBERS = "/organizations/acme/members/"
AUDIT = "/organizations/acme/audit-log/"


async def signed_in(client, email: str) -> None:
    response = await sign_in(client, email)
    assert response.status == 200, await response.text()


async def test_only_an_owner_with_2fa_and_no_sso_may_turn_it_on(client, pool) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    manager = await create_user(pool, "manager@example.com")
    await add_member(pool, org["id"], manager, role="manager")

    await signed_in(client, "owner@example.com")
    page = await (await client.get(SETTINGS)).text()
    assert "Require Two-Factor Authentication" in page and NEEDS_PERSONAL_2FA in page
    assert 'name="require2FA" value="on"' not in page
    refused = await client.post(SETTINGS, data={"require2FA": "on", "confirmed": "yes"})
    assert refused.status == 400 and NEEDS_PERSONAL_2FA in await refused.text()

    await enroll_totp(client)
    page = await (await client.get(SETTINGS)).text()
    assert 'name="require2FA" value="on"' in page and NEEDS_PERSONAL_2FA not in page
    async with pool.acquire() as conn:
        await conn.execute("update organizations set sso_enabled = true where id = $1", org["id"])
    refused = await client.post(SETTINGS, data={"require2FA": "on"})
    assert refused.status == 400 and NOT_WITH_SSO in await refused.text()

    # A manager sees the setting and cannot change it (nor bring up the confirm step).
    async with pool.acquire() as conn:
        await conn.execute("update organizations set sso_enabled = false where id = $1", org["id"])
    await signed_in(client, "manager@example.com")
    page = await (await client.get(SETTINGS)).text()
    assert "Only owners can change this setting." in page
    for form in ({"require2FA": "on"}, {"require2FA": "on", "confirmed": "yes"}):
        refused = await client.post(SETTINGS, data=form)
        assert refused.status == 403 and OWNERS_ONLY in await refused.text()
    async with pool.acquire() as conn:
        assert not await conn.fetchval("select require_2fa from organizations")
        assert await conn.fetchval("select count(*) from enforcement_runs") == 0


async def test_confirm_step_counts_then_turning_it_on_starts_a_run(client, pool) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    for email in ("alice@example.com", "bob@example.com"):
        await add_member(pool, org["id"], await create_user(pool, email))
    await add_member(pool, org["id"], await create_user(pool, "carol@example.com", has2fa=True))
    await signed_in(client, "owner@example.com")
    await enroll_totp(client)

    asked = await client.post(SETTINGS, data={"require2FA": "on"})
    page = await asked.text()
    assert asked.status == 200 and "<dialog open" in page
    assert "<strong>2 members</strong>" in page and 'name="confirmed" value="yes"' in page
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from enforcement_runs") == 0
        assert not await conn.fetchval("select require_2fa from organizations")

    confirmed = await client.post(
        SETTINGS, data={"require2FA": "on", "confirmed": "yes"}, allow_redirects=False
    )
    assert confirmed.status == 303 and confirmed.headers["Location"] == SETTINGS
    async with pool.acquire() as conn:
        run = await conn.fetchrow("select * from enforcement_runs")
        edits = await conn.fetch(
            "select * from audit_log where event = 'org.edit' and organization_id = $1",
            org["id"],
        )
        assert await conn.fetchval("select require_2fa from organizations")
    assert run["status"] == "queued" and run["actor_user_id"] == owner["id"]
    assert [row["data"] for row in edits] == [{"require_2fa": "to True"}]
    assert edits[0]["actor_user_id"] == owner["id"]

    page = await (await client.get(SETTINGS)).text()
    assert "Latest enforcement" in page and "queued" in page
    assert 'http-equiv="refresh"' in page and 'name="require2FA" value="off"' in page


async def test_members_page_shows_2fa_and_pending_and_a_manager_resends(
    client, pool, settings
) -> None:
    owner, org = await owner_and_org(
        pool, "acme", "owner@example.com", has2fa=True, teams=("backend",)
    )
    await add_member(
        pool, org["id"], await create_user(pool, "manager@example.com"), role="manager"
    )
    alice = await create_user(pool, "alice@example.com")
    alice_id = await add_member(pool, org["id"], alice, role="admin", teams=("backend",))
    await remove_for_2fa(pool, alice_id, settings)

    await signed_in(client, "manager@example.com")
    listed = await client.get(MEMBERS)
    page = await listed.text()
    assert listed.status == 200 and "<th>2FA</th>" in page
    assert 'class="yes"' in page and 'class="no"' in page  # the owner has 2FA, the manager not
    assert "pending: removed for no 2FA" in page and "can rejoin until" in page
    assert f"/members/{alice_id}/resend/" in page and "backend" in page

    pending = await (await client.get(MEMBERS, params={"query": "is:pending"})).text()
    assert "alice@example.com" in pending and "owner@example.com" not in pending
    without = await (await client.get(MEMBERS, params={"query": "has2fa:false"})).text()
    assert "manager@example.com" in without and "owner@example.com" not in without
    bad = await client.get(MEMBERS, params={"query": "nope:x"})
    assert bad.status == 400 and bad.content_type == "text/html"
    paged = await (await client.get(MEMBERS, params={"per_page": "1"})).text()
    assert "Next page" in paged and "cursor=" in paged

    async def outbox_rows() -> int:
        async with pool.acquire() as conn:
            return await conn.fetchval(
                """select count(*) from email_outbox
                   where member_id = $1 and template = 'removed_for_2fa'""",
                alice_id,
            )

    before = await outbox_rows()
    resent = await client.post(f"{MEMBERS}{alice_id}/resend/", allow_redirects=False)
    assert resent.status == 303 and resent.headers["Location"] == MEMBERS
    assert await outbox_rows() == before + 1
    page = await (await client.get(resent.headers["Location"])).text()
    assert "The email was sent again to alice@example.com." in page
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("select count(*) from audit_log where event = 'member.reinvite'")
            == 1
        )

    statuses = [
        (await client.post(f"{MEMBERS}{alice_id}/resend/", allow_redirects=False)).status
        for _ in range(5)
    ]
    assert statuses[-1] == 429 and set(statuses[:-1]) == {303}
    limited = await client.post(f"{MEMBERS}{alice_id}/resend/")
    assert limited.status == 429 and "Retry-After" in limited.headers
    assert "too many emails" in await limited.text()

    # A plain member sees no Resend button and cannot resend.
    await add_member(pool, org["id"], await create_user(pool, "dave@example.com"))
    await signed_in(client, "dave@example.com")
    page = await (await client.get(MEMBERS)).text()
    assert "pending: removed for no 2FA" in page and "/resend/" not in page
    assert (await client.post(f"{MEMBERS}{alice_id}/resend/")).status == 403


async def test_audit_log_page_filters_by_event_for_owners_and_managers(
    client, pool, settings
) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    alice_id = await add_member(pool, org["id"], await create_user(pool, "alice@example.com"))
    await add_member(pool, org["id"], await create_user(pool, "bob@example.com"))
    async with pool.acquire() as conn:
        await audit.record(
            conn,
            organization_id=org["id"],
            event="org.edit",
            actor=audit.Actor(user_id=owner["id"], label="owner@example.com"),
            data={"require_2fa": "to True"},
        )
    await remove_for_2fa(pool, alice_id, settings)

    await signed_in(client, "owner@example.com")
    listed = await client.get(AUDIT)
    page = await listed.text()
    assert listed.status == 200 and '<option value="member.pending"' in page
    assert "<code>org.edit</code>" in page and "<code>member.pending</code>" in page
    assert page.index("<code>member.pending</code>") < page.index("<code>org.edit</code>")

    only = await (await client.get(AUDIT, params={"event": "member.pending"})).text()
    assert "<code>member.pending</code>" in only and "<code>org.edit</code>" not in only
    assert '<option value="member.pending" selected>' in only

    first = await (await client.get(AUDIT, params={"per_page": "1"})).text()
    assert "<code>org.edit</code>" not in first
    cursor = re.search(r"cursor=([^&\"]+)", first)
    assert cursor is not None
    older = await client.get(AUDIT, params={"per_page": "1", "cursor": cursor.group(1)})
    assert "<code>org.edit</code>" in await older.text()

    assert (await client.get(AUDIT, params={"event": "nope"})).status == 400
    await signed_in(client, "bob@example.com")
    refused = await client.get(AUDIT)
    assert refused.status == 403 and refused.content_type == "text/html"


async def test_admin_forms_from_another_site_are_refused(client, pool, settings) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    alice_id = await add_member(pool, org["id"], await create_user(pool, "alice@example.com"))
    await remove_for_2fa(pool, alice_id, settings)
    await signed_in(client, "owner@example.com")
    await enroll_totp(client)
    evil = {"Origin": "http://evil.example"}
    async with pool.acquire() as conn:
        emails = await conn.fetchval("select count(*) from email_outbox")

    crossed = await client.post(
        SETTINGS, data={"require2FA": "on", "confirmed": "yes"}, headers=evil
    )
    assert crossed.status == 403
    resend = await client.post(f"{MEMBERS}{alice_id}/resend/", headers=evil)
    assert resend.status == 403
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from enforcement_runs") == 0
        assert await conn.fetchval("select count(*) from email_outbox") == emails
    # Signed out, a page sends you to sign in and back.
    await client.post("/auth/logout/")
    away = await client.get(MEMBERS, allow_redirects=False)
    assert away.status == 303 and away.headers["Location"] == f"/auth/login/?next={MEMBERS}"


async def test_turning_it_off_asks_first_keeps_the_reason_and_each_change_says_so(
    client, pool
) -> None:
    await owner_and_org(pool, "acme", "owner@example.com")
    await signed_in(client, "owner@example.com")
    await enroll_totp(client)

    on = await client.post(SETTINGS, data={"require2FA": "on", "confirmed": "yes"})
    assert "Two-factor authentication is now required." in await on.text()
    page = await (await client.get(SETTINGS)).text()
    assert "is now required" not in page  # the notice is shown once

    asked = await client.post(SETTINGS, data={"require2FA": "off"})
    text = await asked.text()
    assert asked.status == 200 and "Turn off the requirement?" in text
    assert 'name="reason"' in text and 'name="confirmed" value="yes"' in text
    assert 'http-equiv="refresh"' not in text  # the dialog stays while the run is under way
    async with pool.acquire() as conn:
        assert await conn.fetchval("select require_2fa from organizations")

    off = await client.post(
        SETTINGS, data={"require2FA": "off", "confirmed": "yes", "reason": "Rolling out later"}
    )
    assert "Two-factor authentication is no longer required." in await off.text()
    async with pool.acquire() as conn:
        assert not await conn.fetchval("select require_2fa from organizations")
        data = await conn.fetchval(
            "select data from audit_log where event = 'org.edit' order by id desc limit 1"
        )
    assert data == {"require_2fa": "to False", "reason": "Rolling out later"}
