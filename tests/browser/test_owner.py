"""The owner's side, in a real browser: sign in with a code, create an organization from `/`,
require two-factor authentication through the confirm dialog and watch the run finish, resend
a removed member's email from the members page, filter the audit log by event. Every page on
the way reads at 375 px without sideways scrolling and has no serious axe-core finding."""

from __future__ import annotations

import re

import pytest

from db import authenticators
from require2fa import totp
from tests.factories import PASSWORD, add_member, create_user

pytestmark = pytest.mark.browser


async def owner_with_totp(pool, settings, email: str) -> str:
    """A user with PASSWORD and a TOTP factor; returns the factor's secret."""
    user = await create_user(pool, email, name="Olive Owner")
    secret = totp.new_secret()
    async with pool.acquire() as conn:
        await authenticators.insert_totp(
            conn,
            user_id=user["id"],
            name="Phone",
            secret_encrypted=totp.encrypt_secret(settings.secret_key, secret),
            step=totp.current_step() - 2,
        )
    return secret


async def watch_until(page, text: str, seconds: float = 90) -> None:
    """Waits while the page refreshes itself (its meta refresh) until `main` says `text`."""
    from playwright.async_api import Error as PlaywrightError

    for _ in range(int(seconds * 2)):
        try:
            if text in await page.inner_text("main"):
                return
        except PlaywrightError:  # caught between two documents
            pass
        await page.wait_for_timeout(500)
    raise AssertionError(f"the page never said {text!r}: {await page.inner_text('main')}")


async def test_owner_requires_2fa_and_follows_it_through_the_pages(
    live_server, page, check_page, pool, settings, start_worker, mailbox
) -> None:
    base = live_server
    secret = await owner_with_totp(pool, settings, "olive@example.com")

    # `/`, signed out: the ways in.
    await page.goto(base + "/")
    await check_page(page, "home-signed-out")
    await page.get_by_role("link", name="Sign in").first.click()
    await page.get_by_label("Email", exact=True).fill("olive@example.com")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.get_by_label("Code").fill(totp.code_at(secret, totp.current_step()))
    await page.get_by_role("button", name="Verify").click()

    # Signed in, `/` lists your organizations (none yet): create one.
    await page.wait_for_url(base + "/")
    assert await page.get_by_role("heading", name="Your organizations").is_visible()
    await page.get_by_role("link", name="New organization").first.click()
    await check_page(page, "new-organization")
    await page.get_by_label("Name").fill("Acme Robotics")
    await page.get_by_role("button", name="Create organization").click()
    await page.wait_for_url(base + "/organizations/acme-robotics/")

    # Members arrive: three with 2FA, two without.
    async with pool.acquire() as conn:
        org_id = await conn.fetchval("select id from organizations where slug = 'acme-robotics'")
    for n in range(3):
        user = await create_user(pool, f"kept{n}@example.com", has2fa=True)
        await add_member(pool, org_id, user)
    for n in range(2):
        await add_member(pool, org_id, await create_user(pool, f"nofactor{n}@example.com"))
    await page.reload()
    figures = page.get_by_label("Compliance at a glance")
    assert re.search(r"Members\s*6", await figures.inner_text())
    assert re.search(r"Without 2FA\s*2", await figures.inner_text())
    await check_page(page, "overview")

    # Security & Privacy: Turn on, the confirm dialog counts who will be removed.
    start_worker("enforcement", "email", threads=2)
    sidebar = page.get_by_role("navigation", name="Acme Robotics")
    await sidebar.get_by_role("link", name="Security & Privacy").click()
    await page.get_by_role("button", name="Turn on").click()
    dialog = page.get_by_role("dialog", name="Require two-factor authentication?")
    assert "2 members without two-factor authentication" in await dialog.inner_text()
    await check_page(page, "settings-confirm")
    await dialog.get_by_role("button", name="Require two-factor authentication").click()
    # The page refreshes itself while the run is under way, until it has finished.
    await watch_until(page, "completed")
    status = page.get_by_role("row", name=re.compile("^Status"))
    assert "completed" in await status.inner_text()
    assert "Currently: On" in await page.inner_text("main")
    await check_page(page, "settings-after-run")

    # Members: the two removed are pending; Resend one of them.
    await sidebar.get_by_role("link", name="Members").click()
    pending = page.get_by_text("pending: removed for no 2FA")
    assert await pending.count() == 2
    await check_page(page, "members")
    await page.get_by_role("button", name="Resend the email to nofactor0@example.com").click()
    notice = page.get_by_text("The email was sent again to nofactor0@example.com.")
    assert await notice.is_visible()

    # The audit log, filtered by event.
    await sidebar.get_by_role("link", name="Audit log").click()
    await page.get_by_label("Event").select_option("member.pending")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(re.compile(r"event=member\.pending"))
    events = await page.locator("tbody td[data-label=Event]").all_inner_texts()
    assert events == ["member.pending", "member.pending"]
    await check_page(page, "audit-log")

    # The overview shows the run.
    await sidebar.get_by_role("link", name="Overview").click()
    assert "Latest enforcement" in await page.inner_text("main")
    await check_page(page, "overview-after-run")
    await page.goto(base + "/")
    assert await page.get_by_role("link", name="Acme Robotics").is_visible()
    await check_page(page, "home")
    await page.goto(base + "/account/security/")
    await check_page(page, "security")
