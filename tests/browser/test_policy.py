"""The enforcement policy through the pages, in a real browser: an owner chooses on the settings
page whom the requirement applies to (roles, teams) and what happens to those who do not meet it
(block or remove); the confirm dialog's count, names and wording follow each choice; the members
page then shows the blocked members and the scope. Every page on the way reads at 375 px
without sideways scrolling and has no serious axe-core finding."""

from __future__ import annotations

import re

import pytest

from tests.browser.test_admin_console import sign_in
from tests.browser.test_owner import owner_with_totp, watch_until
from tests.factories import add_member, create_org, create_user

pytestmark = pytest.mark.browser


async def acme_with_teams(pool, owner_id: int) -> None:
    """Acme with teams `web` and `ops`: two web members, one ops member and an admin without a
    factor, and a web member with one."""
    org = await create_org(pool, "acme", owner_id, teams=("web", "ops"))
    for email, name, role, teams, has2fa in (
        ("wendy@example.com", "Wendy Web", "member", ("web",), False),
        ("walt@example.com", "Walt Web", "member", ("web",), False),
        ("otto@example.com", "Otto Ops", "member", ("ops",), False),
        ("ada@example.com", "Ada Admin", "admin", (), False),
        ("kim@example.com", "Kim Kept", "member", ("web",), True),
    ):
        user = await create_user(pool, email, name=name, has2fa=has2fa)
        await add_member(pool, org["id"], user, role=role, teams=teams)


async def test_owner_scopes_and_blocks_through_the_settings_page_and_sees_it_on_members(
    live_server, page, check_page, pool, settings, start_worker
) -> None:
    base = live_server
    secret = await owner_with_totp(pool, settings, "olive@example.com")
    async with pool.acquire() as conn:
        owner_id = await conn.fetchval("select id from users where email = 'olive@example.com'")
    await acme_with_teams(pool, owner_id)

    await sign_in(page, base, "olive@example.com", secret)

    # Block, only #web: the dialog counts and names the two web members without a factor.
    await page.goto(base + "/organizations/acme/settings/")
    await page.get_by_label("Members who do not meet it").select_option("block")
    await page.get_by_label("Only these roles and teams").check()
    await page.get_by_label("#web").check()
    await check_page(page, "settings-policy")
    await page.get_by_role("button", name="Turn on").click()
    dialog = page.get_by_role("dialog", name="Require two-factor authentication?")
    text = await dialog.inner_text()
    assert "Applies to: members of #web" in text
    assert "2 members without two-factor authentication will be blocked from Acme" in text
    assert "Wendy Web" in text and "Walt Web" in text
    assert "Otto Ops" not in text and "Ada Admin" not in text and "Kim Kept" not in text
    await check_page(page, "settings-policy-confirm-block")
    await page.keyboard.press("Escape")  # closes the modal dialog; nothing changed
    assert not await dialog.is_visible()
    async with pool.acquire() as conn:
        assert await conn.fetchval("select require_2fa from organizations") is False

    # Remove, the admins and #web: the count, the names and the wording follow.
    await page.goto(base + "/organizations/acme/settings/")
    await page.get_by_label("Members who do not meet it").select_option("remove")
    await page.get_by_label("Only these roles and teams").check()
    await page.get_by_label("admin", exact=True).check()
    await page.get_by_label("#web").check()
    await page.get_by_role("button", name="Turn on").click()
    text = await dialog.inner_text()
    assert "Applies to: members whose role is admin, and members of #web" in text
    assert "3 members without two-factor authentication will be removed from Acme" in text
    assert "Ada Admin" in text and "Otto Ops" not in text
    await dialog.get_by_role("link", name="Cancel").click()
    await page.wait_for_url(base + "/organizations/acme/settings/")

    # Block again, admins and #web, confirmed: the run blocks those three.
    start_worker("enforcement", threads=2)
    await page.get_by_label("Members who do not meet it").select_option("block")
    await page.get_by_label("Only these roles and teams").check()
    await page.get_by_label("admin", exact=True).check()
    await page.get_by_label("#web").check()
    await page.get_by_role("button", name="Turn on").click()
    assert "3 members without two-factor authentication will be blocked" in (
        await dialog.inner_text()
    )
    await dialog.get_by_role("button", name="Require two-factor authentication").click()
    await watch_until(page, "completed")
    assert "Currently: On" in await page.inner_text("main")
    # The form shows the policy now in force.
    assert await page.get_by_label("Members who do not meet it").input_value() == "block"
    assert await page.get_by_label("#web").is_checked()
    assert await page.get_by_label("admin", exact=True).is_checked()
    assert not await page.get_by_label("#ops").is_checked()

    # Members: the three blocked, still members with their roles; the scope said in words.
    await page.goto(base + "/organizations/acme/members/")
    scope = await page.locator("#scope").inner_text()
    assert (
        "Acme requires two-factor authentication only of members whose role is admin,"
        " and members of #web; everyone else may work without it." in scope
    )
    rows = page.get_by_role("row")
    for email in ("wendy@example.com", "walt@example.com", "ada@example.com"):
        row = rows.filter(has_text=email)
        assert "Blocked" in await row.inner_text(), email
    for email in ("otto@example.com", "kim@example.com"):
        assert "Blocked" not in await rows.filter(has_text=email).inner_text(), email
    await check_page(page, "members-blocked")
    await page.get_by_label(re.compile("^Search")).fill("is:blocked")
    await page.get_by_label(re.compile("^Search")).press("Enter")
    await page.wait_for_url(re.compile(r"query=is%3Ablocked"))
    listed = await page.locator("tbody tr").all_inner_texts()
    assert len(listed) == 3 and all("Blocked" in row for row in listed)
    await check_page(page, "members-is-blocked")
    async with pool.acquire() as conn:
        blocked = await conn.fetch(
            "select email, role, user_id from members where blocked_at is not null order by email"
        )
    assert [(r["email"], r["role"]) for r in blocked] == [
        ("ada@example.com", "admin"),
        ("walt@example.com", "member"),
        ("wendy@example.com", "member"),
    ]
    assert all(r["user_id"] is not None for r in blocked)
