"""Single sign-on on the pages: the settings form (owners; the redirect URI to paste), the
sign-in page's entry, and the members page's SSO column, against the real OpenID Provider."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from api.app import create_app
from tests.factories import (
    add_member,
    create_org,
    create_user,
    enroll_totp,
    sign_in_with_totp,
    token_for,
)
from tests.oidc.conftest import CLIENT_SECRET, REDIRECT_URI, Provider, sso_sign_in

SETTINGS_PAGE = "/organizations/acme/settings/"
SSO_PAGE = "/organizations/acme/settings/sso/"


async def owner_signed_in(web: TestClient, pool) -> None:
    """Acme's owner (a real TOTP factor) signed in in `web`'s browser, with alice a member."""
    owner = await create_user(pool, "owner@acme.test")
    secret = await enroll_totp(web, headers=await token_for(pool, owner["id"]))
    org = await create_org(pool, "acme", owner["id"])
    await add_member(pool, org["id"], await create_user(pool, "alice@acme.test"))
    response = await sign_in_with_totp(web, "owner@acme.test", secret)
    assert response.status == 200, await response.text()


async def test_an_owner_saves_and_removes_single_sign_on_on_the_settings_page(
    web: TestClient,
    pool,
    oidc_provider: Provider,
) -> None:
    await owner_signed_in(web, pool)

    settings = await (await web.get(SETTINGS_PAGE)).text()
    page = await (await web.get(SSO_PAGE)).text()
    assert f'href="{SSO_PAGE}"' in settings
    assert REDIRECT_URI in page and "Not configured." in page

    refused = await web.post(
        SSO_PAGE, data={"issuer": "http://127.0.0.1:9", "clientId": "x", "clientSecret": "y"}
    )
    assert refused.status == 400
    assert "did not answer" in await refused.text()

    saved = await web.post(
        SSO_PAGE,
        data={
            "issuer": oidc_provider.issuer,
            "clientId": "require2fa",
            "clientSecret": CLIENT_SECRET,
            "mfa": "idp",
        },
    )
    text = await saved.text()
    assert saved.status == 200, text
    assert "Single sign-on is saved." in text
    assert oidc_provider.issuer in text and CLIENT_SECRET not in text
    assert "whose MFA counts" in await (await web.get(SETTINGS_PAGE)).text()

    removed = await web.post(f"{SSO_PAGE}delete/", allow_redirects=False)
    assert removed.status == 303
    assert "Not configured." in await (await web.get(SSO_PAGE)).text()


async def test_the_members_page_shows_each_members_sso_link(
    web: TestClient,
    aiohttp_client,
    sso_settings,
    pool,
    oidc_provider: Provider,
) -> None:
    await owner_signed_in(web, pool)
    await web.post(
        SSO_PAGE,
        data={
            "issuer": oidc_provider.issuer,
            "clientId": "require2fa",
            "clientSecret": CLIENT_SECRET,
            "mfa": "idp",
        },
    )
    alice = await aiohttp_client(create_app(sso_settings))
    signed_in = await sso_sign_in(
        alice, oidc_provider, "alice-sub", "alice@acme.test", amr=["pwd", "otp"]
    )
    assert signed_in.status == 303

    page = await (await web.get("/organizations/acme/members/")).text()

    assert "<th>SSO</th>" in page
    assert "linked" in page and "pwd, otp" in page
    assert "not linked" in page  # the owner


async def test_the_sign_in_page_leads_to_the_organizations_identity_provider(
    web: TestClient, pool, oidc_provider: Provider
) -> None:
    await owner_signed_in(web, pool)
    await web.post(
        SSO_PAGE,
        data={"issuer": oidc_provider.issuer, "clientId": "require2fa", "clientSecret": "x"},
    )
    web.session.cookie_jar.clear()

    page = await (await web.get("/auth/login/")).text()
    chosen = await web.get("/auth/sso/", params={"org": "Acme"})
    unknown = await web.get("/auth/sso/", params={"org": "nobody"})

    assert "Sign in with your organization's identity provider" in page
    assert chosen.status == 200
    assert 'href="/auth/sso/acme/"' in await chosen.text()
    assert unknown.status == 404
