"""Email domains of an organization's identity provider: owners list them (`domains` on
`PUT organizations/{org}/sso/` and the settings form), each held by one organization, and the
sign-in page's entry takes an email address at one of them to that organization's sign-in."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.factories import add_member, create_org, create_user, token_for
from tests.oidc.conftest import CLIENT_SECRET, Provider, sso_sign_in
from tests.oidc.test_sso_pages import SSO_PAGE, owner_signed_in


async def put_sso(web: TestClient, slug: str, provider: Provider, headers, **body: Any) -> Any:
    return await web.put(
        f"/api/0/organizations/{slug}/sso/",
        json={
            "issuer": provider.issuer,
            "clientId": "require2fa",
            "clientSecret": CLIENT_SECRET,
            **body,
        },
        headers=headers,
    )


async def test_owners_list_email_domains_that_one_organization_holds(
    web: TestClient, pool, oidc_provider: Provider
) -> None:
    acme_owner = await create_user(pool, "owner@acme.test")
    globex_owner = await create_user(pool, "owner@globex.test")
    await create_org(pool, "acme", acme_owner["id"])
    await create_org(pool, "globex", globex_owner["id"])
    acme = await token_for(pool, acme_owner["id"])
    globex = await token_for(pool, globex_owner["id"])

    saved = await put_sso(web, "acme", oidc_provider, acme, domains=["Acme.TEST", " @acme.example"])
    assert saved.status == 200, await saved.text()
    assert (await saved.json())["domains"] == ["acme.example", "acme.test"]
    read = await (await web.get("/api/0/organizations/acme/sso/", headers=acme)).json()
    assert read["domains"] == ["acme.example", "acme.test"]

    # Saved again without `domains`: the listed ones stay.
    again = await put_sso(web, "acme", oidc_provider, acme, mfa="idp")
    assert (await again.json())["domains"] == ["acme.example", "acme.test"]

    taken = await put_sso(
        web, "globex", oidc_provider, globex, domains=["globex.test", "ACME.test"]
    )
    assert taken.status == 409
    body = await taken.json()
    assert "acme.test" in body["detail"] and "another organization" in body["detail"]
    # Nothing of the refused save was kept.
    assert (await web.get("/api/0/organizations/globex/sso/", headers=globex)).status == 404

    bad = await put_sso(web, "acme", oidc_provider, acme, domains=["not a domain"])
    assert bad.status == 400
    assert "domains" in (await bad.json())["errors"]

    # Released by acme, the domain can be claimed by globex.
    released = await put_sso(web, "acme", oidc_provider, acme, domains=["acme.example"])
    assert (await released.json())["domains"] == ["acme.example"]
    claimed = await put_sso(web, "globex", oidc_provider, globex, domains=["acme.test"])
    assert claimed.status == 200, await claimed.text()
    assert (await claimed.json())["domains"] == ["acme.test"]
    log = await (
        await web.get("/api/0/organizations/acme/audit-logs/?event=org.sso-edit", headers=acme)
    ).json()
    assert log["rows"][0]["data"]["domains"] == ["acme.example"]

    # Deleting the configuration releases its domains.
    assert (await web.delete("/api/0/organizations/acme/sso/", headers=acme)).status == 204
    moved = await put_sso(web, "globex", oidc_provider, globex, domains=["acme.example"])
    assert (await moved.json())["domains"] == ["acme.example"]


async def test_openapi_describes_the_domains(web: TestClient) -> None:
    spec = await (await web.get("/api/0/openapi.json")).json()
    put = spec["paths"]["/api/0/organizations/{org}/sso/"]["put"]

    assert "409" in put["responses"]
    assert spec["components"]["schemas"]["SsoConfig"]["properties"]["domains"]["type"] == "array"
    body = put["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    assert "domains" in spec["components"]["schemas"][body]["properties"]


async def test_the_sign_in_entry_takes_an_email_at_a_listed_domain(
    web: TestClient, aiohttp_client, pool, oidc_provider: Provider
) -> None:
    await owner_signed_in(web, pool)
    saved = await web.post(
        SSO_PAGE,
        data={
            "issuer": oidc_provider.issuer,
            "clientId": "require2fa",
            "clientSecret": CLIENT_SECRET,
            "mfa": "local",
            "domains": "Acme.test, acme.example",
        },
    )
    text = await saved.text()
    assert saved.status == 200, text
    assert 'value="acme.example, acme.test"' in text
    assert "People who enter an address at acme.example, acme.test" in text
    web.session.cookie_jar.clear()

    chosen = await web.get("/auth/sso/", params={"org": " Alice@ACME.test "})
    unknown = await web.get("/auth/sso/", params={"org": "bob@elsewhere.test"})
    malformed = await web.get("/auth/sso/", params={"org": "alice@"}, allow_redirects=False)

    assert chosen.status == 200
    assert 'href="/auth/sso/acme/"' in await chosen.text()
    assert unknown.status == 404
    assert "No organization signs in elsewhere.test addresses" in await unknown.text()
    assert malformed.status == 303 and malformed.headers["Location"] == "/auth/login/"

    # The domain routes only: someone at it who is no member of Acme is still refused.
    refused = await sso_sign_in(web, oidc_provider, "mallory-sub", "mallory@acme.test")
    assert refused.status == 403
    assert "No member of Acme has the email mallory@acme.test" in await refused.text()


async def test_a_domain_another_organization_lists_is_refused_on_the_form(
    web: TestClient, pool, oidc_provider: Provider
) -> None:
    globex_owner = await create_user(pool, "owner@globex.test")
    globex = await create_org(pool, "globex", globex_owner["id"])
    await add_member(pool, globex["id"], await create_user(pool, "gina@globex.test"))
    headers = await token_for(pool, globex_owner["id"])
    assert (await put_sso(web, "globex", oidc_provider, headers, domains=["shared.test"])).ok
    await owner_signed_in(web, pool)

    refused = await web.post(
        SSO_PAGE,
        data={
            "issuer": oidc_provider.issuer,
            "clientId": "require2fa",
            "clientSecret": CLIENT_SECRET,
            "domains": "acme.test shared.test",
        },
    )

    text = await refused.text()
    assert refused.status == 409
    assert "shared.test is already used by another organization" in text
    assert 'value="acme.test shared.test"' in text  # the form keeps what was typed
    assert "Not configured." in text
