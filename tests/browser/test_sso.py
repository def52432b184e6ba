"""Single sign-on in a real browser: a member signs in through the sign-in page's entry (by
slug, or by an email at a listed domain), the provider's redirects (the real OpenID Provider of
tests/oidc/), back signed in on the organization's page; an owner fills the settings form and
sees the members page's SSO column (both screenshot as docs/screens/sso-*.png)."""

from __future__ import annotations

import re

import pytest

from api.app import create_app
from db import sso as sso_rows
from require2fa import sso, totp
from tests.browser.test_owner import owner_with_totp
from tests.factories import PASSWORD, add_member, create_org, create_user
from tests.oidc.conftest import CLIENT_SECRET, Provider

pytestmark = pytest.mark.browser


async def test_a_member_signs_in_with_the_identity_provider(
    aiohttp_server, settings, pool, page, check_page, oidc_provider: Provider, browser_port: int
) -> None:
    base = f"http://127.0.0.1:{browser_port}"
    await aiohttp_server(create_app(settings.replace(base_url=base)), port=browser_port)
    owner = await create_user(pool, "owner@acme.test", has2fa=True)
    org = await create_org(pool, "acme", owner["id"])
    await add_member(pool, org["id"], await create_user(pool, "alice@acme.test", name="Alice"))
    async with pool.acquire() as conn:
        await sso_rows.save_config(
            conn,
            organization_id=org["id"],
            issuer=oidc_provider.issuer,
            client_id="require2fa",
            client_secret_encrypted=sso.encrypt_client_secret(settings.secret_key, CLIENT_SECRET),
            mfa="idp",
            metadata=await sso.discover(oidc_provider.issuer, development=True),
        )
    await oidc_provider.next_login("alice-sub", "alice@acme.test", amr=["pwd", "otp"])

    await page.goto(base + "/auth/login/")
    await check_page(page, "sign-in-with-sso")
    await page.get_by_label("Organization").fill("acme")
    await page.get_by_role(
        "button", name="Sign in with your organization's identity provider"
    ).click()

    await check_page(page, "sign-in-with-sso-continue")
    await page.get_by_role("link", name="Continue to Acme's identity provider").click()
    await page.wait_for_url(base + "/organizations/acme/")
    assert await page.get_by_role("heading", name="Acme").first.is_visible()
    async with pool.acquire() as conn:
        linked = await conn.fetchrow("select amr, user_id from sso_identities")
    assert list(linked["amr"]) == ["pwd", "otp"]


async def test_an_owner_connects_the_identity_provider_and_sees_who_signed_in(
    aiohttp_server, settings, pool, page, browser, check_page, oidc_provider, browser_port
) -> None:
    base = f"http://127.0.0.1:{browser_port}"
    await aiohttp_server(create_app(settings.replace(base_url=base)), port=browser_port)
    secret = await owner_with_totp(pool, settings, "owner@acme.test")
    owner = await user_id_of(pool, "owner@acme.test")
    org = await create_org(pool, "acme", owner)
    await add_member(pool, org["id"], await create_user(pool, "alice@acme.test", name="Alice"))
    await add_member(pool, org["id"], await create_user(pool, "bob@acme.test", name="Bob"))

    # The owner signs in with a code and opens the single sign-on settings.
    await page.goto(base + "/auth/login/")
    await page.get_by_label("Email", exact=True).fill("owner@acme.test")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.get_by_label("Code").fill(totp.code_at(secret, totp.current_step()))
    await page.get_by_role("button", name="Verify").click()
    await page.goto(base + "/organizations/acme/settings/sso/")
    await page.get_by_label("Issuer").fill(oidc_provider.issuer)
    await page.get_by_label("Client ID").fill("require2fa")
    await page.get_by_label("Client secret").fill(CLIENT_SECRET)
    await page.get_by_label("Email domains").fill("acme.test")
    await page.get_by_label("The identity provider's MFA counts").check()
    await page.get_by_role("button", name="Save single sign-on").click()
    assert await page.get_by_text("Single sign-on is saved.").is_visible()
    await check_page(page, "sso-settings")

    # Alice enters her work email on the sign-in page, in her own browser.
    alice = await (await browser.new_context()).new_page()
    await oidc_provider.next_login("alice-sub", "alice@acme.test", amr=["pwd", "otp"])
    await alice.goto(base + "/auth/login/")
    await alice.get_by_label("Organization or work email").fill("alice@acme.test")
    await alice.get_by_role(
        "button", name="Sign in with your organization's identity provider"
    ).click()
    await alice.get_by_role("link", name="Continue to Acme's identity provider").click()
    await alice.wait_for_url(base + "/organizations/acme/")
    await alice.context.close()

    # The members page shows who is linked and what their provider asserted.
    await page.goto(base + "/organizations/acme/members/")
    alice_row = page.get_by_role("row", name=re.compile("alice@acme.test"))
    assert "pwd, otp" in await alice_row.inner_text()
    bob_row = page.get_by_role("row", name=re.compile("bob@acme.test"))
    assert "not linked" in await bob_row.inner_text()
    await check_page(page, "members-sso")


async def user_id_of(pool, email: str) -> int:
    """The id of the user with `email`."""
    async with pool.acquire() as conn:
        return int(await conn.fetchval("select id from users where email = $1", email))
