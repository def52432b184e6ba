"""The owner's console in a real browser: run the members from the members page (invite,
change a role, remove, resend to every pending member) and follow a run on its own page, whose
progress bars move until every email is sent. Each page reads at 1280 and 375 px without
sideways scrolling and has no serious axe-core finding."""

from __future__ import annotations

import re

import pytest

from require2fa import totp
from tests.browser.test_owner import owner_with_totp
from tests.factories import PASSWORD, add_member, create_org, create_user

pytestmark = pytest.mark.browser


async def sign_in(page, base: str, email: str, secret: str) -> None:
    await page.goto(base + "/auth/login/")
    await page.get_by_label("Email", exact=True).fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.get_by_label("Code").fill(totp.code_at(secret, totp.current_step()))
    await page.get_by_role("button", name="Verify").click()
    await page.wait_for_url(base + "/")


async def test_owner_runs_the_members_page(live_server, page, check_page, pool, settings) -> None:
    base = live_server
    secret = await owner_with_totp(pool, settings, "olive@example.com")
    async with pool.acquire() as conn:
        owner_id = await conn.fetchval("select id from users where email = 'olive@example.com'")
    org = await create_org(pool, "acme", owner_id, teams=("backend",))
    for n in range(3):
        await add_member(pool, org["id"], await create_user(pool, f"dev{n}@example.com"))
    await sign_in(page, base, "olive@example.com", secret)
    await page.goto(base + "/organizations/acme/members/?query=dev")

    # Invite someone into a team, as an admin; back on the same filtered page with a notice.
    await page.get_by_text("Invite a member").click()
    await page.get_by_label("Email", exact=True).fill("new@example.com")
    await page.get_by_label("Role", exact=True).select_option("admin")
    await page.get_by_label(re.compile("backend", re.I)).check()
    await page.get_by_role("button", name="Send invitation").click()
    notice = page.get_by_role("status")
    assert "new@example.com was invited as admin" in await notice.inner_text()
    assert page.url.endswith("/members/?query=dev")
    await check_page(page, "members-after-invite")

    # Change a role.
    await page.get_by_text("Change role").first.click()
    await page.get_by_label("Role of dev0@example.com", exact=True).select_option("manager")
    await page.get_by_role("button", name="Save role").first.click()
    assert "dev0@example.com is now manager." in await page.get_by_role("status").inner_text()

    # Remove, after confirming.
    await page.get_by_role("button", name="Remove dev1@example.com").click()
    dialog = page.get_by_role("dialog", name="Remove dev1@example.com from Acme?")
    await check_page(page, "members-remove-confirm")
    await dialog.get_by_role("button", name="Remove member").click()
    assert "dev1@example.com was removed" in await page.get_by_role("status").inner_text()
    assert page.url.endswith("/members/?query=dev")

    # Resend to every pending member: one button with the count.
    await page.get_by_role("button", name="Resend to every pending member (1)").click()
    assert "sent again to 1 pending member." in await page.get_by_role("status").inner_text()
    assert "2 members match" in await page.inner_text("main")
    await check_page(page, "members")


async def test_owner_follows_a_run_until_every_email_is_sent(
    live_server, page, check_page, pool, settings, start_worker, mailbox
) -> None:
    base = live_server
    secret = await owner_with_totp(pool, settings, "olive@example.com")
    async with pool.acquire() as conn:
        owner_id = await conn.fetchval("select id from users where email = 'olive@example.com'")
    org = await create_org(pool, "acme", owner_id)
    for n in range(4):
        await add_member(pool, org["id"], await create_user(pool, f"nofactor{n}@example.com"))
    await sign_in(page, base, "olive@example.com", secret)
    await page.goto(base + "/organizations/acme/settings/")
    await page.get_by_role("button", name="Turn on").click()
    dialog = page.get_by_role("dialog", name="Require two-factor authentication?")
    await dialog.get_by_role("button", name="Require two-factor authentication").click()
    await page.wait_for_url(base + "/organizations/acme/settings/")

    await page.get_by_role("link", name="Enforcement runs").click()
    await check_page(page, "runs")
    await page.get_by_role("link", name="Run 1").click()
    assert await page.get_by_role("button", name="Cancel the run").count() in (0, 1)
    await check_page(page, "run-queued")
    start_worker("enforcement", "email", threads=2)
    # The page's script polls the run; the bars fill without a reload.
    sent = page.get_by_role("progressbar", name="Emails sent")
    for _ in range(120):
        if await page.inner_text("#run-status") == "completed" and (
            await sent.get_attribute("value") == "4"
        ):
            break
        await page.wait_for_timeout(500)
    text = await page.inner_text("main")
    assert "5 of 5 members checked; 4 removed." in text.replace("\n", " ")
    assert "4 of 4 emails sent." in text
    assert await page.get_by_text("This page updates itself").is_hidden()
    assert await page.get_by_role("button", name="Cancel the run").is_hidden()
    await check_page(page, "run-completed")


async def test_the_confirm_dialogs_are_modal_and_turning_off_asks_first(
    live_server, page, check_page, pool, settings
) -> None:
    base = live_server
    secret = await owner_with_totp(pool, settings, "olive@example.com")
    async with pool.acquire() as conn:
        owner_id = await conn.fetchval("select id from users where email = 'olive@example.com'")
    org = await create_org(pool, "acme", owner_id)
    await add_member(pool, org["id"], await create_user(pool, "alice@example.com"))
    await page.set_viewport_size({"width": 375, "height": 740})
    await sign_in(page, base, "olive@example.com", secret)
    await page.goto(base + "/organizations/acme/settings/")

    # Turn on: the dialog is modal, in view at 375 px, with the focus inside; Escape closes it.
    await page.get_by_role("button", name="Turn on").click()
    dialog = page.get_by_role("dialog", name="Require two-factor authentication?")
    assert await dialog.evaluate("d => d.matches(':modal')")
    assert await dialog.evaluate("d => d.contains(document.activeElement)")
    assert await dialog.get_by_role("button", name="Require two-factor authentication").is_visible()
    box = await dialog.bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 740
    await check_page(page, "settings-confirm-on")
    await page.keyboard.press("Escape")
    assert await dialog.is_hidden()
    async with pool.acquire() as conn:
        assert not await conn.fetchval("select require_2fa from organizations")

    await page.get_by_role("button", name="Turn on").click()
    await dialog.get_by_role("button", name="Require two-factor authentication").click()
    notice = page.get_by_role("status")
    assert "Two-factor authentication is now required." in await notice.inner_text()

    # Turn off asks first, with a reason for the audit log.
    await page.get_by_role("button", name="Turn off").click()
    off = page.get_by_role("dialog", name="Turn off the requirement?")
    assert await off.evaluate("d => d.matches(':modal')")
    await off.get_by_label("Reason").fill("Postponed to next quarter")
    await check_page(page, "settings-confirm-off")
    await off.get_by_role("button", name="Turn off the requirement").click()
    # (Signed in a moment ago: no re-authentication is asked.)
    notice = page.get_by_role("status")
    assert "no longer required" in await notice.inner_text()
    async with pool.acquire() as conn:
        data = await conn.fetchval(
            "select data from audit_log where event = 'org.edit' order by id desc limit 1"
        )
    assert data["reason"] == "Postponed to next quarter"
    await check_page(page, "settings-after-off")


async def test_the_other_console_pages_read_well(live_server, page, check_page, pool, settings):
    """The audit log, webhooks (Ping, Redeliver, Disable), API tokens, the API reference, a
    removed member's `/` and the security page, each at 1280 and 375 px."""
    from tests.factories import remove_for_2fa

    base = live_server
    secret = await owner_with_totp(pool, settings, "olive@example.com")
    async with pool.acquire() as conn:
        owner_id = await conn.fetchval("select id from users where email = 'olive@example.com'")
    org = await create_org(pool, "acme", owner_id)
    alice_id = await add_member(pool, org["id"], await create_user(pool, "alice@example.com"))
    await remove_for_2fa(pool, alice_id, settings)
    await sign_in(page, base, "olive@example.com", secret)

    await page.goto(base + "/organizations/acme/audit-log/")
    await page.get_by_label("Target").fill("alice")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(re.compile(r"target=alice"))
    said = await page.locator("tbody td.said").all_inner_texts()
    assert said and all("alice@example.com" in text for text in said)
    await check_page(page, "audit-log-words")

    await page.goto(base + "/organizations/acme/webhooks/")
    await page.get_by_label("Payload URL").fill(
        "https://hooks.example.com/a-rather-long-path/for/acme"
    )
    await page.get_by_role("button", name="Add webhook").click()
    assert "Its secret is shown this once" in await page.inner_text("main")
    await check_page(page, "webhooks")
    await page.get_by_role("button", name="Ping").click()
    await page.wait_for_url(base + "/organizations/acme/webhooks/")
    assert "A ping to https://hooks.example.com/" in await page.inner_text("main")
    await page.get_by_role("button", name="Redeliver").first.click()
    assert "was queued again" in await page.inner_text("main")
    await page.get_by_role("button", name="Disable").click()
    assert "is off: nothing is sent to it" in await page.inner_text("main")
    assert await page.get_by_role("button", name="Enable").is_visible()
    await check_page(page, "webhooks-disabled")

    await page.goto(base + "/account/tokens/")
    await page.get_by_label("Name").fill("CI deploys")
    await page.get_by_role("button", name="Create token").click()
    assert "It is shown this once" in await page.inner_text("main")
    await check_page(page, "tokens")

    await page.goto(base + "/docs/")
    await page.get_by_text("/api/0/organizations/{org}/members/").first.click()
    await check_page(page, "docs")

    await page.goto(base + "/account/security/")
    await check_page(page, "security-reordered")

    # Alice, removed, signs in and sees what to do.
    alice = await page.context.browser.new_context()
    alice_page = await alice.new_page()
    await alice_page.goto(base + "/auth/login/")
    await alice_page.get_by_label("Email", exact=True).fill("alice@example.com")
    await alice_page.get_by_label("Password").fill(PASSWORD)
    await alice_page.get_by_role("button", name="Sign in", exact=True).click()
    await alice_page.wait_for_url(base + "/")
    notice = alice_page.get_by_role("heading", name=re.compile("Acme removed you"))
    assert await notice.is_visible()
    await check_page(alice_page, "home-removed")
    await alice.close()
