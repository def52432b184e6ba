"""The rollout tools on the pages: "Send reminders", "Remind them first", when each member was
last reminded, and an owner's "Reset 2FA" with its confirm step."""

from __future__ import annotations

import asyncio

from tests.factories import add_member, create_user, enroll_totp, owner_and_org, sign_in

SETTINGS = "/organizations/acme/settings/"
MEMBERS = "/organizations/acme/members/"


async def owner_signed_in(client, pool):
    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    response = await sign_in(client, "owner@example.com")
    assert response.status == 200
    await enroll_totp(client)
    return org, owner


async def test_send_reminders_from_the_settings_page_and_the_dialog(
    client, pool, broker, start_worker
) -> None:
    org, _owner = await owner_signed_in(client, pool)
    alice = await create_user(pool, "alice@example.com")
    await add_member(pool, org["id"], alice)
    start_worker("enforcement")

    page = await (await client.get(SETTINGS)).text()
    assert "Send reminders" in page and 'action="/organizations/acme/reminders/"' in page
    dialog = await (await client.post(SETTINGS, data={"require2FA": "on"})).text()
    assert "Remind them first" in dialog

    sent = await client.post("/organizations/acme/reminders/")
    assert sent.status == 200
    assert "Reminders are being sent" in await sent.text()
    await asyncio.to_thread(broker.join, "enforcement", timeout=30_000)
    members_page = await (await client.get(MEMBERS)).text()
    assert "reminded 20" in members_page  # "reminded YYYY-MM-DD" beside alice's "no"
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "select to_address from email_outbox where template = 'reminder_2fa'"
            )
            == "alice@example.com"
        )


async def test_a_member_cannot_send_reminders(client, pool) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    bob = await create_user(pool, "bob@example.com")
    await add_member(pool, org["id"], bob)
    await sign_in(client, "bob@example.com")
    assert "Send reminders" not in await (await client.get(SETTINGS)).text()
    refused = await client.post("/organizations/acme/reminders/")
    assert refused.status == 403


async def test_reset_2fa_from_the_members_page(client, pool) -> None:
    org, _owner = await owner_signed_in(client, pool)
    alice = await create_user(pool, "alice@example.com", has2fa=True)
    member_id = await add_member(pool, org["id"], alice)
    page = await (await client.get(MEMBERS)).text()
    action = f'action="/organizations/acme/members/{member_id}/reset-2fa/"'
    assert action in page and page.count("Reset 2FA") == 1  # not beside the owner's own row

    confirm = await client.post(f"/organizations/acme/members/{member_id}/reset-2fa/")
    text = await confirm.text()
    assert confirm.status == 200 and "Reset two-factor authentication of alice@example.com?" in text
    async with pool.acquire() as conn:
        assert await conn.fetchval(
            "select count(*) from authenticators where user_id = $1", alice["id"]
        )
    done = await client.post(
        f"/organizations/acme/members/{member_id}/reset-2fa/", data={"confirmed": "yes"}
    )
    assert done.status == 200
    assert "The two-factor authentication of alice@example.com was reset." in await done.text()
    async with pool.acquire() as conn:
        left = await conn.fetchval(
            "select count(*) from authenticators where user_id = $1", alice["id"]
        )
    assert left == 0

    # In another organization too: the page says why not, and nothing changes.
    bob = await create_user(pool, "bob@example.com", has2fa=True)
    bob_member = await add_member(pool, org["id"], bob)
    other_owner, other = await owner_and_org(pool, "other", "other@example.com", has2fa=True)
    await add_member(pool, other["id"], bob)
    refused = await client.post(
        f"/organizations/acme/members/{bob_member}/reset-2fa/", data={"confirmed": "yes"}
    )
    assert refused.status == 409 and "another organization" in await refused.text()


async def test_exempt_members_show_as_exempt(client, pool) -> None:
    org, _owner = await owner_signed_in(client, pool)
    robot = await create_user(pool, "ci-bot@example.com")
    member_id = await add_member(pool, org["id"], robot)
    async with pool.acquire() as conn:
        await conn.execute(
            """update members set exempt_2fa_until = '2099-01-02T00:00:00Z',
                      exempt_2fa_reason = 'Deploys from CI' where id = $1""",
            member_id,
        )
    page = await (await client.get(MEMBERS, params={"query": "is:exempt"})).text()
    assert "exempt until 2099-01-02" in page and "Deploys from CI" in page
    assert page.count('<td class="email">') == 1 and '<td class="email">ci-bot@' in page


async def test_the_confirm_dialog_names_who_will_be_removed(client, pool) -> None:
    org, _owner = await owner_signed_in(client, pool)
    manager = await create_user(pool, "manager@example.com", name="Maria Manager")
    await add_member(pool, org["id"], manager, role="manager")
    for n in range(12):
        user = await create_user(pool, f"dev{n:02}@example.com", name=f"Dev {n:02}")
        await add_member(pool, org["id"], user)
    robot = await create_user(pool, "ci-bot@example.com", name="CI Bot")
    robot_id = await add_member(pool, org["id"], robot)
    async with pool.acquire() as conn:
        await conn.execute(
            """update members set exempt_2fa_until = now() + interval '1 day',
                      exempt_2fa_reason = 'CI' where id = $1""",
            robot_id,
        )
    dialog = await (await client.post(SETTINGS, data={"require2FA": "on"})).text()
    # The manager without 2FA counts (the run would remove them); only the acting owner and the
    # exempt bot are left out.
    assert "<strong>13 members</strong>" in dialog
    assert "Maria Manager" in dialog and "Dev 00" in dialog and "Dev 08" in dialog
    assert "Dev 09" not in dialog and "CI Bot" not in dialog
    assert "And 3 more." in dialog
    link = "/organizations/acme/members/?query=is%3Anoncompliant"
    assert link in dialog
    listed = await (await client.get(link)).text()
    assert "dev11@example.com" in listed and "ci-bot@example.com" not in listed
    assert "<td>owner@example.com" not in listed  # the owner has 2FA (the header names them)


async def test_exempt_and_lift_from_the_members_page(client, pool) -> None:
    from datetime import UTC, datetime, timedelta

    org, _owner = await owner_signed_in(client, pool)
    robot = await create_user(pool, "ci-bot@example.com")
    member_id = await add_member(pool, org["id"], robot)
    page = await (await client.get(MEMBERS)).text()
    assert f'action="/organizations/acme/members/{member_id}/exempt/"' in page
    assert 'href="/api/0/organizations/acme/2fa-compliance/?format=csv"' in page

    day = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    url = f"/organizations/acme/members/{member_id}/exempt/"
    done = await client.post(url, data={"reason": "Deploys from CI", "until": day})
    assert done.status == 200
    assert f"ci-bot@example.com is exempt from two-factor authentication until {day}." in (
        await done.text()
    )
    async with pool.acquire() as conn:
        row = await conn.fetchrow("select * from members where id = $1", member_id)
    assert row["exempt_2fa_reason"] == "Deploys from CI"
    assert row["exempt_2fa_until"].date().isoformat() == day

    too_late = (datetime.now(UTC) + timedelta(days=400)).date().isoformat()
    refused = await client.post(url, data={"reason": "CI", "until": too_late})
    assert refused.status == 400 and "at most a year" in await refused.text()
    no_date = await client.post(url, data={"reason": "CI", "until": "soon"})
    assert no_date.status == 400

    lifted = await client.post(url, data={"lift": "yes"})
    assert "The exemption of ci-bot@example.com was lifted." in await lifted.text()
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("select exempt_2fa_until from members where id = $1", member_id)
            is None
        )
