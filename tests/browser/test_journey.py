"""The way back in, in a real browser (Chromium driven by Playwright) against the real server.

Part of `make test` (`make test-browser` runs the browser tests alone); see conftest.py.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pyotp
import pytest

from tests.factories import (
    PASSWORD,
    add_member,
    create_user,
    owner_and_org,
    remove_for_2fa,
)

pytestmark = pytest.mark.browser


async def test_removed_member_comes_back_through_the_pages(
    live_server, pool, settings, page, check_page
) -> None:
    base = live_server
    settings = settings.replace(base_url=base)

    owner, org = await owner_and_org(
        pool, "acme", "owner@example.com", has2fa=True, teams=("backend",)
    )
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa = true where id = $1", org["id"])
    alice = await create_user(pool, "alice@example.com")
    member_id = await add_member(
        pool, org["id"], alice, role="admin", teams=("backend",), settings={"deploy": "never"}
    )
    link = await remove_for_2fa(pool, member_id, settings)

    await page.goto(base + urlsplit(link).path)
    assert "Rejoin Acme" in await page.inner_text("h1")
    await check_page(page, "accept")

    await page.click("text=Sign in >> nth=-1")
    await check_page(page, "login")
    await page.fill("#email", "alice@example.com")
    await page.fill("#password", PASSWORD)
    await page.click("button:has-text('Sign in')")
    await page.wait_for_url(base + urlsplit(link).path)

    await page.click("text=Set up two-factor authentication")
    await page.wait_for_url(base + "/account/security/")
    await check_page(page, "security-setup")
    secret = await page.input_value("input[name=secret]")
    await page.fill("#otp", pyotp.TOTP(secret).now())
    await page.click("button:has-text('Confirm')")
    await page.wait_for_selector("text=The invitation you opened was sent to")
    await check_page(page, "security-recovery-codes")

    await page.get_by_role("link", name="Rejoin Acme").click()
    await page.wait_for_url(base + urlsplit(link).path)
    await page.get_by_role("button", name="Rejoin Acme").click()
    await page.wait_for_url(base + "/organizations/acme/")
    assert "Acme" in await page.inner_text("body")

    async with pool.acquire() as conn:
        back = await conn.fetchrow("select * from members where id = $1", member_id)
        teams = await conn.fetchval(
            "select array_agg(t.slug) from member_teams mt join teams t on t.id = mt.team_id "
            "where mt.member_id = $1",
            member_id,
        )
    assert back["user_id"] == alice["id"] and back["role"] == "admin"
    assert back["settings"] == {"deploy": "never"} and teams == ["backend"]
