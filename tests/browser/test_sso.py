"""Signing in through the organization's identity provider, in a real browser: the sign-in
page's entry, the provider's redirects (the real OpenID Provider of tests/oidc/), back signed in
on the organization's page."""

from __future__ import annotations

import pytest

from api.app import create_app
from db import sso as sso_rows
from require2fa import sso
from tests.factories import add_member, create_org, create_user
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
